# Two commands do all set-up on a fresh machine (see README):
#   make simulate   - the default federation (3 hospitals, DP-SGD, SecAgg+)
#   make test       - the test suite
# Override TORCH for a CUDA build at a hospital, e.g. TORCH="torch==2.13.0 --index-url ...".

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
# Every test by default, the slow fault and attack suites included; MARKS selects some,
# e.g. MARKS="not integration" for the fast tests alone.
MARKS ?=
STAMP := $(VENV)/.fedcare-installed
# The worked example of a model plugin (README, "Bring your own model"), installed as a
# hospital would install any plugin: a regular (not editable) install of its package.
EXAMPLE_PLUGIN := examples/fedcare-example-models

export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_DISABLE_UPDATE_CHECK := 1

# The architecture walls are checked by the team's tool beside the checkout, when present.
WALLS := ../shared/tools/walls.py

.PHONY: simulate test check benchmark benchmark-deployment install

install: $(STAMP)

# torch goes first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml $(wildcard $(EXAMPLE_PLUGIN)/src/*/*.py)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH)
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	$(VENV)/bin/python -m pip install --quiet ./$(EXAMPLE_PLUGIN)
	touch $(STAMP)

simulate: $(STAMP)
	$(VENV)/bin/fedcare simulate $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(if $(MARKS),-m "$(MARKS)") $(ARGS)

# Lint, format, types (strict on the three production packages) and the walls.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared client server
	if [ -f $(WALLS) ]; then $(VENV)/bin/python $(WALLS) . ; fi

# Every section in one run: DP step and round times, the simulation scale table (3, 10, 100
# and 1,000 hospitals; ARGS="--sizes 3,10" limits it), DP-SGD per model family and mode.
benchmark: $(STAMP)
	$(VENV)/bin/python -m fedcare.simulations.benchmark $(ARGS)

benchmark-deployment: $(STAMP)
	$(VENV)/bin/python -m fedcare.simulations.deployment_benchmark $(ARGS)
