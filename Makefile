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
	$(BIN)/pip install -q -e ".[dev,viz,serve]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python main_pretrain.py --config configs/pretrain/demo.yaml run.output_dir=$(DEMO_DIR) run.overwrite=true \
		$(if $(DATA),data.path=$(DATA),)
	$(BIN)/python main_linear.py --config configs/linear/default.yaml eval.checkpoint=$(DEMO_DIR) \
		run.output_dir=$(DEMO_DIR)/eval run.overwrite=true $(if $(DATA),eval.train_path=$(DATA),)
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

typecheck: $(STAMP)
	$(BIN)/mypy ssl_art

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
