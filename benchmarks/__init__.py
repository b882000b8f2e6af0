"""The runner beside the original approach, measured in one run: `python -m benchmarks`."""
