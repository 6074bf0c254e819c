"""``python -m lpstream`` is the ``lpstream`` command."""

from lpstream.cli import main

main()
