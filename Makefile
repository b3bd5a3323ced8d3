# The two commands of the README. Each one sets everything up first (idempotent).
.PHONY: setup demo test bench bench-predict bench-sem bench-sem-frames bench-tune bench-rate bench-explain bench-pretrain bench-segment bench-segment-brightness bench-measure bench-generate

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/ncm demo

test: setup
	xvfb-run -a .venv/bin/python -m pytest

bench: bench-predict bench-sem bench-sem-frames bench-tune bench-rate bench-explain bench-pretrain bench-segment bench-segment-brightness bench-measure bench-generate

bench-predict: setup
	.venv/bin/python benchmarks/run.py

bench-sem: setup
	.venv/bin/python benchmarks/sem_sessions.py

bench-sem-frames: setup
	.venv/bin/python benchmarks/sem_classification.py

bench-tune: setup
	.venv/bin/python benchmarks/tuning.py

bench-rate: setup
	.venv/bin/python benchmarks/rate_capability.py

bench-explain: setup
	.venv/bin/python benchmarks/explanations.py

bench-pretrain: setup
	.venv/bin/python benchmarks/pretraining.py

bench-generate: setup
	.venv/bin/python benchmarks/generate.py

bench-measure: setup
	.venv/bin/python -m pip install -q "openpnm>=3.4" "pyamg>=5"  # PoreSpy's finite-difference solver, compared with TauFactor
	.venv/bin/python benchmarks/measure.py

bench-segment: setup
	.venv/bin/python benchmarks/segment.py

bench-segment-brightness: setup
	.venv/bin/python benchmarks/segment_brightness.py
