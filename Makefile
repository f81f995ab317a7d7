# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install relcomp, run the quick reproduction of the paper
#   make test   - create .venv, install relcomp[dev], run the whole test suite
#
# TORCH_SPEC is installed before relcomp so that pip does not pick a torch for us.
# The default, torch==2.13.0, is a CPU build that lies on disk on our CPU machines;
# elsewhere choose your own build, e.g. `make demo TORCH_SPEC='torch>=2.6'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.relcomp-installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/relcomp reproduce --profile quick $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
