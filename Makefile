# llmlab: two commands.
#   make demo   set up .venv (llmlab + the hf extra) and run the whole lab on built-in data
#   make test   set up .venv (llmlab + the dev extra), then ruff, lint-imports and pytest
# A second run skips the set-up that is already done (stamp files in .venv); a changed setup.py or C
# source (src/llmlab/tokenizers/_fast*.c, _fastcommon.h) installs again, which compiles it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: 2.13.0 is the CPU build on this machine; an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==2.13.0"
	@touch $@

$(VENV)/.hf: pyproject.toml setup.py $(wildcard src/llmlab/tokenizers/_fast*.[ch]) $(VENV)/.torch
	$(PIP) install --quiet -e ".[hf]"
	@touch $@

$(VENV)/.dev: pyproject.toml setup.py $(wildcard src/llmlab/tokenizers/_fast*.[ch]) $(VENV)/.torch
	$(PIP) install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.hf

demo: $(VENV)/.hf
	HF_HUB_OFFLINE=1 $(VENV)/bin/llmlab demo

test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(PY) -m pytest
