# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test install clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# pyproject gives ranges; constraints.txt pins what CI tests, torch 2.13.0 among them (a local CPU wheel
# here; an unpinned torch resolves to the multi-GB CUDA build).
$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spinrl demo

# Lint, format-check and type-check first (configured in pyproject.toml; ~1 s and ~40 s of CPU on a cold mypy cache), then the
# tests. torch tests never run in parallel workers: 2 cores, and torch stalls when cores are shared.
test: $(STAMP)
	$(VENV)/bin/ruff check spinrl
	$(VENV)/bin/ruff format --check spinrl
	$(VENV)/bin/mypy
	$(PY) -m pytest -p no:cacheprovider tests

clean-venv:
	rm -rf $(VENV)
