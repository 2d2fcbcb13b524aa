# vlmlab: `make test` checks everything; `make reproduce` reruns every notebook.
# Variables (override on the command line): make reproduce PROFILE=paper DEVICE=cuda NOTEBOOKS=02_uniinfo_tta
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PROFILE ?= embedded
DEVICE ?= auto
# Notebook names without .ipynb; default: every notebooks/NN_*.ipynb, in order.
NOTEBOOKS ?= $(basename $(notdir $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))))
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
KERNEL := vlmlab
TIMEOUT ?= 3600
CACHE ?= $(or $(VLMLAB_CACHE),.cache/vlmlab)
RUN_ENV := VLMLAB_BATCH=1 HF_HUB_OFFLINE=1

NB_NAMES := $(basename $(notdir $(NOTEBOOKS)))
RESULTS := results/$(PROFILE)
EXECUTED := $(foreach nb,$(NB_NAMES),$(RESULTS)/$(nb)/executed.ipynb)
SOURCES := $(shell find vlmlab -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)
# With PY pointing at another environment (conda: make reproduce PY=python), skip the venv setup.
SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))

# Notebooks run one after another, in order (later ones reuse caches the earlier ones fill).
# make reproduce PARALLEL=1 -j2 runs them side by side when memory allows.
ifeq ($(PARALLEL),)
.NOTPARALLEL:
endif

.PHONY: help setup test reproduce claims lab clean-results clean-cache train-embedded train-embedded-vlm evaluate-embedded sweep collect

help:  ## list the targets
	@echo "vlmlab (PROFILE=$(PROFILE), DEVICE=$(DEVICE))"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  notebooks: $(NB_NAMES)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reruns only when pyproject.toml changes; torch first and pinned (an unpinned torch pulls several GB).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (vlmlab)"
	touch $@

setup: $(SETUP)  ## create .venv, install torch (pinned) then vlmlab[test], register the 'vlmlab' kernel

test: setup  ## run the test suite (offline, CPU)
	VLMLAB_BATCH=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

reproduce: $(EXECUTED)  ## run the notebooks (PROFILE, DEVICE, NOTEBOOKS) into results/PROFILE/NB/
	@echo "results in $(RESULTS)/: $(NB_NAMES)"

# One target per notebook; a missing params/$(PROFILE)/NB.yaml stops make with its name.
$(EXECUTED): $(RESULTS)/%/executed.ipynb: notebooks/%.ipynb params/$(PROFILE)/%.yaml $(SOURCES) | $(SETUP)
	@mkdir -p $(@D)
	@echo "== $* (profile=$(PROFILE), device=$(DEVICE)) -> $(@D)/"
	$(RUN_ENV) $(PY) -m papermill notebooks/$*.ipynb $@ -k $(KERNEL) --cwd notebooks \
		-f params/$(PROFILE)/$*.yaml -r profile $(PROFILE) -r device $(DEVICE) -r out_dir $(abspath $(@D)) \
		--execution-timeout $(TIMEOUT) --log-output

claims: | $(SETUP)  ## merge every notebook's claims of PROFILE into results/PROFILE/claims.md (after make reproduce)
	$(PY) -m vlmlab.cli claims --profile $(PROFILE)

lab: setup  ## open JupyterLab (kernel "Python (vlmlab)")
	HF_HUB_OFFLINE=1 $(PY) -m jupyter lab

clean-results:  ## delete results/PROFILE/ (one profile at a time)
	rm -rf $(RESULTS)

clean-cache:  ## delete cached features and rendered data (VLMLAB_CACHE, default .cache/vlmlab)
	rm -rf $(CACHE)

# ---------------------------------------------------------------------------------------
# The embedded model: retrain (deterministic, resumable: rerun after an interruption) and measure.
# ---------------------------------------------------------------------------------------
train-embedded: | $(SETUP)  ## retrain the embedded CLIP into vlmlab/assets/embedded.safetensors (~80 min on 2 CPU cores)
	$(RUN_ENV) $(PY) -m vlmlab.models.train_embedded $(TRAIN_ARGS)

train-embedded-vlm: | $(SETUP)  ## retrain the embedded VLM of notebook 05 into vlmlab/assets/embedded_vlm.safetensors (~15 min, 1 CPU core)
	$(RUN_ENV) $(PY) -m vlmlab.blind.train_vlm $(TRAIN_ARGS)

evaluate-embedded: | $(SETUP)  ## measure the embedded CLIP; rewrites the numbers in vlmlab/assets/MODEL_CARD.md
	$(RUN_ENV) $(PY) scripts/evaluate_embedded.py

# ---------------------------------------------------------------------------------------
# Sweeps: parameter grids over notebooks, local processes or SLURM (docs/sweeps.md).
# ---------------------------------------------------------------------------------------
SWEEP ?= params/sweeps/embedded_small.yaml
sweep: | $(SETUP)  ## run a parameter sweep: SWEEP=params/sweeps/<name>.yaml (SWEEP_ARGS="--workers 4" or "--executor slurm")
	$(RUN_ENV) $(PY) -m vlmlab.cli sweep $(SWEEP) $(SWEEP_ARGS)

collect: | $(SETUP)  ## merge a sweep's tables into one CSV: SWEEP=... (COLLECT_ARGS="--table tta")
	$(PY) -m vlmlab.cli collect $(SWEEP) $(COLLECT_ARGS)
