# The README's two commands: `make demo` and `make test`. Each sets up its own .venv first.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# This project's machines carry a CPU build of torch 2.13.0 on local disk.
TORCH ?= torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
EXTRAS ?= export,ort,openvino,plot,dev
# `make demo CAMVID=../shared/data/camvid` trains on CamVid instead of the synthetic default.
CAMVID ?=
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: venv demo test test-slow mutants clean gpu-check

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(FIND_LINKS) "$(TORCH)"
	$(PIP) install -q --disable-pip-version-check $(FIND_LINKS) -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PYTHON) -m fcn_deploy.benchmarks.demo --out $(DEMO_OUT) $(if $(CAMVID),--camvid $(CAMVID),)

# --durations=20: the slowest tests in every run's output (CI's too), so a slow new test shows.
test: venv
	$(PYTHON) -m pytest -q --durations=20 $(PYTEST_ARGS)

# The long checks: every arch x backbone (VGG16 included) exported and verified at 97x131,
# 360x480 and 500x375, batch 1 and 2.
test-slow: venv
	FCN_DEPLOY_SLOW=1 $(PYTHON) -m pytest -q -m slow $(PYTEST_ARGS)

# The mutation check (slow, not part of `make test`): each mutation in tools/mutants.toml applied
# to a temporary copy of the repo, the tests meant to catch it run there; prints caught / NOT CAUGHT.
# `make mutants MUTANTS_ARGS="-k verify"` runs a subset.
MUTANTS_ARGS ?=
mutants: venv
	$(PYTHON) tools/mutants.py $(MUTANTS_ARGS)

gpu-check: venv
	$(PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache *.egg-info
