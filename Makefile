# Two commands do all set-up on a fresh machine:
#   make train   create .venv, install the core, fetch MNIST, train with config.yaml, write runs/<name>/
#   make test    create .venv, install everything (all extras), run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install train test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@ $(VENV)/.core-installed

install: $(VENV)/.all-installed

train: $(VENV)/.core-installed
	$(BIN)/lenet5 train --config config.yaml
	@echo "The lenet5 command lives in $(VENV): run '. $(VENV)/bin/activate' first (or call $(BIN)/lenet5)."
	@echo "'make install' adds the extras: the torch engine, ONNX export, serve, tune, TensorBoard."

test: $(VENV)/.all-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.all-installed
	$(BIN)/python benchmarks/engine_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
