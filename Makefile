# compressor: two commands on a fresh machine.
#   make demo   run the main job (a built-in recipe on Fashion-MNIST, end to end, with a report)
#   make test   run the test suite
# Both create .venv (or use the active virtualenv), install torch only when none is importable,
# install the package with its dev extra, and make sure Fashion-MNIST is present.

PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.compressor-installed
TORCH_VERSION ?= 2.13.0
DEMO_RECIPE ?= fashion-mnist-quickstart
PYTEST_ARGS ?=

.PHONY: demo test test-fast install data lint clean

demo: install data
	$(VENV)/bin/compressor run $(DEMO_RECIPE)

test: install data
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install data
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

install: $(STAMP)

# The venv sees system site-packages, so a torch the user already has is kept.
$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null \
		&& echo "Using the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
		|| $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[dev]"
	@touch $@

data: install
	$(VENV)/bin/compressor fetch-data

lint: install
	$(VENV)/bin/ruff check compressor tests benchmarks

clean:
	rm -rf runs build *.egg-info .pytest_cache
