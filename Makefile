# `make demo` and `make test` each create .venv if missing and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch-harmonics 0.9.3 needs torch 2.14.x: install the pair together, pinned (looser pins pull a broken pair)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torch-harmonics==0.9.3
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/forecast demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo-output tiny-output .pytest_cache
