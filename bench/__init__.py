"""Benchmarks: `make bench`. Figures are ratios against plain RQ measured in the same run."""
