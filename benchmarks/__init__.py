"""Scripts that measure lpstream against a named peer in one run and print the ratio."""
