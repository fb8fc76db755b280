# make install | make test | make lint | make demo | make train DATASET=DRIVE_AV | make test-run DATASET=DRIVE_AV
PY ?= python3
VENV ?= .venv
# The torch to install: TORCH=... on the command line; else the one the last `make install
# TORCH=...` recorded (so `make test` keeps it); else 2.13.0. Passed to pip as words, so
# TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cpu" works.
TORCH ?= $(or $(shell cat $(VENV)/.torch-spec 2>/dev/null),torch==2.13.0)
export TORCH
DATASET ?= DRIVE_AV
BIN = $(VENV)/bin

.PHONY: install test lint demo train test-run data FORCE

install: $(VENV)/.installed
# The torch spec is kept in a file rewritten only when TORCH changes, so that
# `make install TORCH=...` reinstalls into an existing .venv and a plain `make install` does not.
$(VENV)/.torch-spec: FORCE
	@mkdir -p $(VENV)
	@printf '%s\n' "$$TORCH" | cmp -s - $@ || printf '%s\n' "$$TORCH" > $@
$(VENV)/.installed: requirements.txt $(VENV)/.torch-spec
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $$TORCH
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

# ./data -> ../shared/data when the real data sets sit beside the checkout.
data:
	@if [ ! -e data ] && [ -d ../shared/data ]; then ln -s ../shared/data data; echo "linked ./data -> ../shared/data"; fi

test: install data
	$(BIN)/python -m pytest -q tests

lint: install  # ruff.toml's checks; ruff is a development tool, installed here on first use
	@$(BIN)/python -m ruff --version >/dev/null 2>&1 || $(BIN)/python -m pip install -q ruff==0.17.6
	$(BIN)/python -m ruff check .

demo: install  # starts afresh each time: its own earlier run is removed first
	rm -rf SYNTHETIC/demo runs/SYNTHETIC_demo
	$(BIN)/python -m scripts.synthetic --out ./data-synthetic
	$(BIN)/python train.py --dataset SYNTHETIC --data-root ./data-synthetic --epochs 15 --batch-size 2 \
	    --learning-rate 1e-3 --image-size 128 128 --base-width 8 --job_name demo --validation 25
	$(BIN)/python test.py --dataset SYNTHETIC --data-root ./data-synthetic --job_name demo

train: install data
	DATASET=$(DATASET) PYTHON=$(BIN)/python sh train.sh

test-run: install data
	DATASET=$(DATASET) PYTHON=$(BIN)/python sh test.sh
