# Quick start: `make demo` (pretrain + evaluate on the embedded synthetic collection) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=
DEMO_DIR ?= runs/demo

.PHONY: demo test test-slow test-browser lint typecheck bench clean install

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, pinned to the builds this machine class serves from local disk
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev,viz,export,serve]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ssl-art pretrain --config demo --out $(DEMO_DIR) --overwrite $(if $(DATA),--data $(DATA),)
	$(BIN)/ssl-art linear --config linear/default --checkpoint $(DEMO_DIR) --out $(DEMO_DIR)/eval --overwrite \
		$(if $(DATA),eval.train_path=$(DATA),)
	@echo "run directory: $(DEMO_DIR)  (tensorboard --logdir $(DEMO_DIR))"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow"

# Real-browser test of the web app: Playwright drives Debian's chromium (installed with apt-get when missing; never
# `playwright install`, no browser download). Screenshots go to $(BROWSER_OUT).
CHROMIUM ?= /usr/bin/chromium
BROWSER_OUT ?= runs/browser
test-browser: $(STAMP)
	test -x $(CHROMIUM) || (apt-get update -q && apt-get install -y -q chromium) || \
		(echo "error: chromium is missing and apt-get could not install it (run as root, or set CHROMIUM=...)"; exit 1)
	SSL_ART_CHROMIUM=$(CHROMIUM) SSL_ART_BROWSER_OUT=$(BROWSER_OUT) $(BIN)/python -m pytest -q -m browser tests/app/test_browser.py

lint: $(STAMP)
	$(BIN)/ruff check ssl_art tests benchmarks main_*.py
	$(BIN)/ruff format --check ssl_art tests benchmarks main_*.py
	$(BIN)/lint-imports --no-logo  # import direction: [importlinter] contracts in setup.cfg

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
