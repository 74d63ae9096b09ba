# The two commands of the README: `make demo` and `make test`. Both set up .venv first (idempotent).
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/sealign demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
