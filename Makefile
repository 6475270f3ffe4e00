# Two entry points do all set-up on a fresh machine:
#   make quickstart   -> the whole workflow offline on the embedded default
#   make test         -> lint + the whole test suite
# make test-floors runs the suite with every dependency at its declared lower bound.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/quickstart
FLOORS_VENV ?= .venv-floors

.PHONY: setup quickstart test test-floors lint bench

$(VENV)/.installed: pyproject.toml constraints/dev.txt scripts/setup.sh
	bash scripts/setup.sh $(PY) $(VENV)
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	HF_HUB_OFFLINE=1 $(BIN)/cultureclip quickstart --out $(OUT)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: setup lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider

$(FLOORS_VENV)/.installed: pyproject.toml constraints/floors.txt scripts/setup.sh
	bash scripts/setup.sh $(PY) $(FLOORS_VENV) constraints/floors.txt
	touch $@

test-floors: $(FLOORS_VENV)/.installed
	HF_HUB_OFFLINE=1 $(FLOORS_VENV)/bin/pytest -q -p no:cacheprovider

bench: setup
	for b in benchmarks/*.py; do HF_HUB_OFFLINE=1 $(BIN)/python $$b || exit 1; done
