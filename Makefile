# clasflow: `make quickstart` runs the pipeline locally, `make test` runs the tests.
# Both install everything they need first (`make setup`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
UV_VERSION := 0.13.9

# Paddle pins its CPU threads to 1 unless this is set before it is imported.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup test test-oracle quickstart clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

test: setup
	$(BIN)/pytest -q -p no:cacheprovider

# Compares our models with PaddleClas 2.6 itself (installed into a separate folder).
ORACLE_SITE := $(VENV)/oracle-site
test-oracle: setup
	test -d $(ORACLE_SITE) || $(BIN)/uv pip install -q --python $(BIN)/python --target $(ORACLE_SITE) --no-deps paddleclas==2.6.0
	PYTHONPATH=$(ORACLE_SITE) $(BIN)/pytest -q -p no:cacheprovider -m oracle -s

clean:
	rm -rf runs output mlruns mlflow.db .pytest_cache
