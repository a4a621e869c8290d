# The two commands a newcomer needs:
#   make demo   start the service, run a real RFT job on a tiny local model, show the result
#   make test   run the test suite
# Each creates .venv when missing and installs what it needs.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rft-installed
PYTHON ?= python3

# Without CUDA the CPU build of torch is installed first (much smaller); the project's
# own torch range is then already satisfied. With CUDA, pip's normal torch is used.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_CUDA),yes)
TORCH_SPEC ?= torch
else
TORCH_SPEC ?= torch==2.13.0
endif

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/run.py

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --timeout=900 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check service graders jobs tests bench demo

bench: $(STAMP)
	$(PY) bench/graders.py
	$(PY) bench/serving.py
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) rft-data .pytest_cache
