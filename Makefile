# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install relcomp, run the quick reproduction of the paper
#   make test   - create .venv, install relcomp[dev], run ruff and the whole test suite
# For your own loop: make test-fast (the suite without the tests marked slow, under 2 minutes).
#
# TORCH_SPEC is installed before relcomp so that pip does not pick a torch for us.
# The default, torch==2.13.0, is a CPU build that lies on disk on our CPU machines;
# elsewhere choose your own build, e.g. `make demo TORCH_SPEC='torch>=2.6'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Test workers (pytest-xdist), one per core by default; JOBS=0 runs the suite in this process.
JOBS ?= auto
BIN := $(VENV)/bin
STAMP := $(VENV)/.relcomp-installed
DEV_STAMP := $(VENV)/.relcomp-dev-installed

.PHONY: demo test test-fast lint venv clean

venv: $(STAMP)

# What the main job needs: torch and relcomp's core dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

# What the tests need besides: pytest, hypothesis, ruff, selenium, onnx/onnxruntime, pyarrow, transformers (never torchvision).
# The annotate page test also needs chromium + chromedriver (apt-get install chromium chromium-driver); .ci/run installs them.
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/relcomp reproduce --profile quick $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests scripts

test: lint
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadgroup --durations=15 $(ARGS)

test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadgroup -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
