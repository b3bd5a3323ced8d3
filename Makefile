# The two commands of the README. Each one sets everything up first (idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/ncm demo

test: setup
	xvfb-run -a .venv/bin/python -m pytest

bench: setup
	.venv/bin/python benchmarks/run.py
