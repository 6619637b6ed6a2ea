"""Performance figures of issue 7: one module per figure, ``python -m bench.<name> [--quick]``.

Every figure is a ratio of two sides measured in the same run, interleaved and repeated (the
median is reported), so it holds on a shared, noisy machine; see bench/README.md.
"""
