# `make demo` and `make test` each create .venv if missing and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# the venv takes about 5.5 GB (torch's CUDA-capable build); say so before pip fails half-way on a full disk
	@test -x $(BIN)/python || $(PYTHON) -c "import shutil; free = shutil.disk_usage('.').free / 1e9; \
		free < 8 and print(f'make: warning: installing into $(VENV) needs about 8 GB free (5.5 GB stay); {free:.1f} GB free here')"
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
