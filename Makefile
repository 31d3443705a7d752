# distilprune: the two commands a new user needs.
#   make quickstart   set up .venv (if missing) and run the built-in offline recipe end to end
#   make test         set up .venv (if missing) and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test setup clean-venv

setup: $(STAMP)

# Reinstall when the dependency declarations change. constraints.txt pins every package version.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

quickstart: $(STAMP)
	$(PY) train/distill.py recipe=quickstart

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
