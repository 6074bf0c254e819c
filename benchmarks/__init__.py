"""Scripts that measure lpstream against a named peer in one run and print like-for-like ratios.

A peer that cannot be run here is named with its published figure and no ratio is printed
against it. Code shared with the tests lives in :mod:`benchmarks.harness`; benchmarks never
import ``tests``.
"""
