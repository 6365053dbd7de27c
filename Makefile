# The two commands the README opens with:
#   make demo   set up .venv (first time only) and run feedbackgen make -> presa train -> presa eval
#               on a dataset the project ships, offline
#   make test   set up .venv (first time only), run ruff and mypy, the default test suite, then
#               the docstring examples of feedbackgen and presa (a separate pytest run: with
#               --doctest-modules, tests/feedbackgen and tests/presa would clash with the packages)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed-core
SGSTAMP := $(VENV)/.installed-safety-gymnasium
MDSTAMP := $(VENV)/.installed-metadrive
DEMO_TASK ?= BallRun-mini
DEMO_DIR  ?= runs/demo
DEMO_THRESHOLD ?= 20
DEMO_PRESET ?= study
DEMO_EPISODES ?= 20

.PHONY: demo test test-slow install install-all lint typecheck bench clean-demo

# mypy on every package: the CLI is the package presa_cli only through setuptools' package-dir
# (cli/ -> presa_cli), which mypy cannot see through the editable install, so a link under build/
# (gitignored) gives it that name on MYPYPATH.
MYPY_PATH := build/mypy-path
define MYPY
	@mkdir -p $(MYPY_PATH) && ln -sfn ../../cli $(MYPY_PATH)/presa_cli
	MYPYPATH=$(MYPY_PATH) $(VENV)/bin/mypy -p feedbackgen -p presa -p presa_cli
endef

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch (asked for by any other package) is a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[bullet,zoo,test]"
	@touch $@

# safety-gymnasium 1.0.0 / gymnasium-robotics 1.2.2 pin versions that cannot be installed on
# Python 3.11: install them without their pins, next to their real dependencies.
$(SGSTAMP): $(STAMP)
	$(PIP) install -e ".[safety-gymnasium]"
	$(PIP) install --no-deps "safety-gymnasium==1.0.0" "gymnasium-robotics==1.2.2"
	@touch $@

$(MDSTAMP): $(STAMP)
	$(PIP) install -e ".[metadrive]"
	@touch $@

install: $(STAMP)

install-all: $(STAMP) $(SGSTAMP) $(MDSTAMP)

# The main job end to end, offline, on a dataset the project ships: make a feedback store, train
# PreSa and the BC-Safe-Seg baseline on it (quick preset), evaluate both in the real simulator and
# print the normalised reward/cost table. $(DEMO_DIR) is recreated on every run.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/feedbackgen make --task $(DEMO_TASK) --noise 0.1 --seed 0 --out $(DEMO_DIR)/store.zarr
	$(VENV)/bin/presa train --data $(DEMO_DIR)/store.zarr --threshold $(DEMO_THRESHOLD) --seed 0 --preset $(DEMO_PRESET) --algo presa --out $(DEMO_DIR)/runs/presa --no-progress
	$(VENV)/bin/presa train --data $(DEMO_DIR)/store.zarr --threshold $(DEMO_THRESHOLD) --seed 0 --preset $(DEMO_PRESET) --algo bc_safe_seg --out $(DEMO_DIR)/runs/bc_safe_seg --no-progress
	$(VENV)/bin/presa eval $(DEMO_DIR)/runs/presa --episodes $(DEMO_EPISODES) --seed 0
	$(VENV)/bin/presa eval $(DEMO_DIR)/runs/bc_safe_seg --episodes $(DEMO_EPISODES) --seed 0
	$(VENV)/bin/presa report $(DEMO_DIR)/runs --out $(DEMO_DIR)/report

test: $(STAMP)
	$(VENV)/bin/ruff check feedbackgen presa cli tests benchmarks datasets
	$(MYPY)
	$(VENV)/bin/python -m pytest -q -n 2
	$(VENV)/bin/python -m pytest -q --doctest-modules feedbackgen presa

test-slow: install-all
	$(VENV)/bin/python -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check feedbackgen presa cli tests benchmarks datasets

typecheck: $(STAMP)
	$(MYPY)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py
