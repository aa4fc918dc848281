# The two Quick-start commands. Both install into ./.venv first (idempotent).
.PHONY: install serve stop test test-unit bench

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

bench: install
	.venv/bin/python benchmarks/graph_overhead.py
