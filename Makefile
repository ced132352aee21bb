# compressor: two commands on a fresh machine.
#   make demo   run the main job (a built-in recipe on Fashion-MNIST, end to end, with a report)
#   make test   run the test suite
# Both create .venv (or use the active virtualenv), install torch only when none is importable,
# install the package with its dev extra, and make sure Fashion-MNIST is present. `make test` also
# installs the third-party zoo (timm, torchvision) with --no-deps into a folder only the zoo tests
# put on their path: it can never replace torch, and torchvision's CUDA-built operators stay out of
# every other process.

PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.compressor-installed
TORCH_VERSION ?= 2.13.0
DEMO_RECIPE ?= fashion-mnist-quickstart
PYTEST_ARGS ?=
ZOO := $(VENV)/zoo-packages
ZOO_STAMP := $(ZOO)/.installed
TIMM_VERSION ?= 1.0.31
TORCHVISION_VERSION ?= 0.28.0

.PHONY: demo test test-fast install data zoo lint clean

demo: install data
	$(VENV)/bin/compressor run $(DEMO_RECIPE)

test: install data zoo
	COMPRESSOR_ZOO_PACKAGES="$(abspath $(ZOO))" $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install data
	$(PY) -m pytest -m "not slow and not zoo" $(PYTEST_ARGS)

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

zoo: $(ZOO_STAMP)

$(ZOO_STAMP): Makefile | $(STAMP)
	$(PY) -m pip install --quiet --no-deps --upgrade --target "$(ZOO)" \
		"timm==$(TIMM_VERSION)" "torchvision==$(TORCHVISION_VERSION)"
	@touch $@

data: install
	$(VENV)/bin/compressor fetch-data

lint: install
	$(VENV)/bin/ruff check compressor tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf runs build *.egg-info .pytest_cache
