# distilprune: the two commands a new user needs.
#   make quickstart   set up .venv (if missing) and run the built-in offline recipe end to end
#   make test         set up .venv (if missing) and run the test suite
# On a GPU box:
#   make setup-gpu    a separate .venv-gpu with torch's CUDA build and onnxruntime-gpu
#   make test-gpu     the test suite in .venv-gpu (GPU-only checks run there)
#   make gpu-check    bench/gpu_check.py: every CUDA path in one script, summary table + JSON
PYTHON ?= python3
VENV ?= .venv
# cpu: onnxruntime; gpu: onnxruntime-gpu (both install the `onnxruntime` module, so one per venv)
ORT_EXTRA ?= cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test setup setup-gpu test-gpu gpu-check clean-venv

setup: $(STAMP)

# Reinstall when the dependency declarations change. constraints.txt pins every package version.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(ORT_EXTRA),dev]'
	@touch $(STAMP)

quickstart: $(STAMP)
	$(PY) train/distill.py recipe=quickstart

test: $(STAMP)
	$(PY) -m pytest

setup-gpu:
	$(MAKE) setup VENV=.venv-gpu ORT_EXTRA=gpu

test-gpu:
	$(MAKE) test VENV=.venv-gpu ORT_EXTRA=gpu

gpu-check:
	$(PYTHON) bench/gpu_check.py

clean-venv:
	rm -rf .venv .venv-gpu
