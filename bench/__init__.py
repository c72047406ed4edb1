"""Benchmarks of gradflow against PyTorch: `python bench/run.py --help`."""
