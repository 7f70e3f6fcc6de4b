# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo detect clean-venv

venv: $(STAMP)

# The venv is rebuilt when the dependency pins change (setup.cfg / constraints.txt).
# Registry downloads can break off mid-file (torch is ~530 MB): pip resumes a download many times, and
# the whole step is retried with a pause, so one flaky connection does not fail a fresh install.
PIP_NET := --retries 10 --timeout 60
RETRY   := n=1; until
RETRY_END = ; do [ $$n -ge 4 ] && exit 1; echo "pip failed (attempt $$n of 4), retrying in 20 s" >&2; n=$$((n+1)); sleep 20; done

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(RETRY) $(PY) -m pip install $(PIP_NET) -q --upgrade pip wheel setuptools $(RETRY_END)
	$(RETRY) $(PY) -m pip install $(PIP_NET) --resume-retries 50 -c constraints.txt -e '.[dev]' $(RETRY_END)
	@touch $(STAMP)

test: venv
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

demo: venv
	$(PY) -m regressor.demo

# Optional offline landmark detector (dlib + packaged 68-point predictor), see docs/own_images.md.
detect: venv
	$(RETRY) $(PY) -m pip install $(PIP_NET) --resume-retries 50 -c constraints.txt -e '.[detect]' $(RETRY_END)

clean-venv:
	rm -rf $(VENV)
