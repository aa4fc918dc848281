# The two Quick-start commands. Both install into ./.venv first (idempotent).
.PHONY: install serve stop test test-unit test-slow retrain bench

install:
	./scripts/install.sh

serve: install
	.venv/bin/embassy serve

stop:
	.venv/bin/embassy stop

test: install
	.venv/bin/python -m pytest -q

test-unit: install
	.venv/bin/python -m pytest -q tests/unit

# Opt-in: retraining on a data sample gives the same model twice (about 80 s on 2 cores).
test-slow: install
	.venv/bin/python -m pytest -q -m slow

# Rebuild the shipped artefacts (models/artifacts) from models/training; about 35 minutes
# on 2 cores. Prints the new figures beside the manifest's old ones.
retrain: install
	HF_HUB_OFFLINE=1 .venv/bin/embassy train all

bench: install
	.venv/bin/python benchmarks/graph_overhead.py
