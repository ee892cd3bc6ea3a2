# Quick start (each sets up .venv on first use, then runs):
#   make reproduce      reproduce a paper through DVC (train, log to MLflow, verify its claims)
#   make test           run the test suite
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PAPER  ?= transformers-learn-icl-by-gd
BIN    := $(VENV)/bin

.PHONY: setup reproduce test validate mlflow-ui clean-results

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

reproduce: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro verify@$(PAPER)

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

validate: setup
	$(BIN)/registry validate

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean-results:
	rm -rf results reports
