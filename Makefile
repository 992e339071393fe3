# The two set-up commands of the README:
#   make demo   installs xmr into .venv and runs its main job (xmr demo)
#   make test   installs xmr (with test extras) into .venv and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch is named in the same pip command so pip takes the pinned CPU build, never a CUDA one
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0" -e ".[dev]"
	touch $@

demo: install
	$(BIN)/xmr demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache
