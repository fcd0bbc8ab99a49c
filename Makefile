# The README's two commands: `make demo` and `make test`. Each sets up its own .venv first.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# This project's machines carry a CPU build of torch 2.13.0 on local disk.
TORCH ?= torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
EXTRAS ?= export,ort,openvino,plot,video,dev,serve
# `make demo CAMVID=../shared/data/camvid` trains on CamVid instead of the synthetic default.
CAMVID ?=
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: venv demo test test-slow mutants clean gpu-check results

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(FIND_LINKS) "$(TORCH)"
	$(PIP) install -q --disable-pip-version-check $(FIND_LINKS) -e ".[$(EXTRAS)]"
	# torchfcn's own model code, for the import parity tests (its package deps pull another torch and torchvision)
	$(PIP) install -q --disable-pip-version-check --no-deps torchfcn==1.9.7
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PYTHON) -m fcn_deploy.benchmarks.demo --out $(DEMO_OUT) $(if $(CAMVID),--camvid $(CAMVID),)

# One pytest worker per core (pytest-xdist; --dist loadscope keeps a module on one worker, so its
# fixtures are built once), torch / onnxruntime on one thread each, so 2 cores run 2 tests at a
# time instead of one test on 2 threads (PYTEST_WORKERS=0: one process, as before).
# --durations=20: the slowest tests in every run's output (CI's too), so a slow new test shows.
PYTEST_WORKERS ?= auto
test: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --durations=20 $(PYTEST_ARGS)

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


# On a fresh NVIDIA machine (driver, CUDA toolkit for pycuda's build): its own venv with the
# `gpu` extra only (onnxruntime-gpu, never beside the CPU onnxruntime), then one line per check.
GPU_VENV ?= .venv-gpu
GPU_CHECK_ARGS ?=
$(GPU_VENV)/.installed: pyproject.toml Makefile
	test -x $(GPU_VENV)/bin/python || $(PY) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q --disable-pip-version-check -e ".[gpu]"
	touch $@

gpu-check: $(GPU_VENV)/.installed
	$(GPU_VENV)/bin/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(GPU_VENV) $(DEMO_OUT) .pytest_cache *.egg-info

# Regenerate the recorded reports in benchmarks/results/ (hours for all steps; see the script's header):
# make results STEPS="latency-r18 ceilings" CAMVID=../shared/data/camvid
results: venv
	BIN=$(VENV)/bin CAMVID=$(or $(CAMVID),../shared/data/camvid) $(if $(STEPS),STEPS="$(STEPS)",) benchmarks/make_results.sh
