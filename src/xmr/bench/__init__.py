"""Helpers shared by the benchmark scripts and the tests: timing and markdown (:mod:`.common`), the
synthetic shapes dataset (:mod:`.shapes`), the label-retrieval study (:mod:`.label_retrieval`).

The scripts in ``benchmarks/`` import these from the installed package; nothing here runs a benchmark.
"""
