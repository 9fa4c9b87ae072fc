"""sealift's benchmark harness: ``python -m bench`` from the repo root (or ``bench/run``).

Not part of the test suite. See bench/README.md.
"""
