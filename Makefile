# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo detect clean-venv

venv: $(STAMP)

# The venv is rebuilt when the dependency pins change (setup.cfg / constraints.txt).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: venv
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

demo: venv
	$(PY) -m regressor.demo

# Optional offline landmark detector (dlib + packaged 68-point predictor), see issue 9 / docs.
detect: venv
	$(PY) -m pip install -c constraints.txt -e '.[detect]'

clean-venv:
	rm -rf $(VENV)
