# vlmlab: `make test` checks everything; `make reproduce` reruns every notebook.
# Variables (override on the command line): make reproduce PROFILE=paper DEVICE=cuda NOTEBOOKS=02_uniinfo_tta
# RESULTS_DIR=results (runs go to RESULTS_DIR/PROFILE/NB/), VLMLAB_CACHE_DIR (what clean-cache deletes).
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
# The cache the code uses (vlmlab.runtime.cache_root: $VLMLAB_CACHE, else .cache/vlmlab); a project-specific
# name, so an unrelated CACHE in the environment never becomes what clean-cache deletes.
VLMLAB_CACHE_DIR ?= $(or $(VLMLAB_CACHE),.cache/vlmlab)
RESULTS_DIR ?= results
RUN_ENV := VLMLAB_BATCH=1 HF_HUB_OFFLINE=1

NB_NAMES := $(basename $(notdir $(NOTEBOOKS)))
RESULTS := $(RESULTS_DIR)/$(PROFILE)
# papermill writes here; renamed to executed.ipynb (the target) only once the run finished.
PARTIAL := executed.partial.ipynb
EXECUTED := $(foreach nb,$(NB_NAMES),$(RESULTS)/$(nb)/executed.ipynb)
SOURCES := $(shell find vlmlab -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)
# With PY pointing at another environment (conda: make reproduce PY=python), skip the venv setup.
SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))

# Notebooks run one after another, in order (later ones reuse caches the earlier ones fill).
# make reproduce PARALLEL=1 -j2 runs them side by side when memory allows: only on a machine with cores to spare,
# since notebooks 01-05 each use every core (torch threads, worker processes). On 2 cores it is far slower
# (measured cold: notebook 01 took 213 s beside 02 against 66 s alone; docs/speed.md).
ifeq ($(PARALLEL),)
.NOTPARALLEL:
endif

.PHONY: help setup test reproduce claims reruns lab clean-results clean-cache train-embedded train-embedded-vlm evaluate-embedded sweep collect bench

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
# The target exists only after a finished run: papermill writes $(PARTIAL) (it rewrites that file as it
# exits, even on Ctrl-C, with the cells that never ran), and only a run that wrote provenance.json
# (Run.finish(), the notebook's last step) is renamed to executed.ipynb. A failed, interrupted or killed
# run leaves no executed.ipynb, so the next make reruns it.
$(EXECUTED): $(RESULTS)/%/executed.ipynb: notebooks/%.ipynb params/$(PROFILE)/%.yaml $(SOURCES) | $(SETUP)
	@mkdir -p $(@D)
	@rm -f $@ $(@D)/provenance.json
	@echo "== $* (profile=$(PROFILE), device=$(DEVICE)) -> $(@D)/"
	$(RUN_ENV) $(PY) -m papermill notebooks/$*.ipynb $(@D)/$(PARTIAL) -k $(KERNEL) --cwd notebooks \
		-f params/$(PROFILE)/$*.yaml -r profile $(PROFILE) -r device $(DEVICE) -r out_dir $(abspath $(@D)) \
		--execution-timeout $(TIMEOUT) --log-output
	@test -f $(@D)/provenance.json || { echo "make: $*: papermill exited 0 but $(@D)/provenance.json is missing" \
		"(the notebook must end with run.finish()); the executed cells are in $(@D)/$(PARTIAL)" >&2; exit 1; }
	@mv -f $(@D)/$(PARTIAL) $@

claims: | $(SETUP)  ## merge every notebook's claims of PROFILE into results/PROFILE/claims.md (after make reproduce)
	$(PY) -m vlmlab.cli claims --profile $(PROFILE) --results-root $(RESULTS_DIR)

# Reruns with other seeds (params/sweeps/reruns/<notebook>.yaml: a fresh world and fresh method seeds, two per
# notebook), then the scorecard, which counts per claim in how many runs it holds. Resumable: a complete case
# is skipped. Embedded profile only (the paper profile's seeds are its sweeps: docs/sweeps.md).
RERUN_SWEEPS = $(wildcard $(foreach nb,$(NB_NAMES),params/sweeps/reruns/$(nb).yaml))
reruns: | $(SETUP)  ## rerun every notebook with two other seeds (~30 min, embedded), then make claims (docs/claims_embedded.md)
	$(if $(filter embedded,$(PROFILE)),,$(error make reruns: the rerun sweeps are the embedded profile's (PROFILE=$(PROFILE))))
	@for f in $(RERUN_SWEEPS); do \
		$(RUN_ENV) $(PY) -m vlmlab.cli sweep $$f --results-root $(RESULTS_DIR) || exit 1; done
	$(PY) -m vlmlab.cli claims --profile $(PROFILE) --results-root $(RESULTS_DIR)

lab: setup  ## open JupyterLab (kernel "Python (vlmlab)")
	HF_HUB_OFFLINE=1 $(PY) -m jupyter lab

# Guards of the clean-* targets, expanded with the recipe, so they stop make -n too.
# $(call guard_path,TARGET,PATH,VARIABLE): PATH must be set and must not be /, $HOME, this repository or
# a folder above one of them.
guard_path = $(if $(strip $(2)),$(if $(filter $(patsubst %/,%,$(abspath $(2)))/%,$(abspath $(HOME))/ $(CURDIR)/),\
	$(error make $(1): refusing to delete '$(2)' ($(3)): it is /, your home folder, this repository \
	or a folder above them; set $(3) to the folder to delete)),\
	$(error make $(1): $(3) is empty; set it to the folder to delete))
# One profile name: not empty, one word, no '/', not '.' or '..'.
guard_profile = $(if $(filter-out 1,$(words $(PROFILE)))$(findstring /,$(PROFILE))$(filter . ..,$(PROFILE)),\
	$(error make clean-results: PROFILE='$(PROFILE)' is not one profile name; \
	name the one to delete: make clean-results PROFILE=tiny))
CACHE_PATH = $(patsubst ~%,$(HOME)%,$(strip $(VLMLAB_CACHE_DIR)))

clean-results:  ## delete RESULTS_DIR/PROFILE/ (one profile at a time; PROFILE must be set)
	$(guard_profile)$(call guard_path,clean-results,$(strip $(RESULTS_DIR)),RESULTS_DIR)
	$(call guard_path,clean-results,$(RESULTS),RESULTS_DIR/PROFILE)
	rm -rf -- '$(RESULTS)'

clean-cache:  ## delete cached features and rendered data (VLMLAB_CACHE_DIR: $VLMLAB_CACHE, else .cache/vlmlab)
	$(call guard_path,clean-cache,$(CACHE_PATH),VLMLAB_CACHE_DIR)
	rm -rf -- '$(CACHE_PATH)'

# ---------------------------------------------------------------------------------------
# The embedded model: retrain (deterministic, resumable: rerun after an interruption) and measure.
# ---------------------------------------------------------------------------------------
train-embedded: | $(SETUP)  ## retrain the embedded CLIP into vlmlab/assets/embedded.safetensors (~35 min on 2 CPU cores, resumable)
	$(RUN_ENV) $(PY) -m vlmlab.models.train_embedded $(TRAIN_ARGS)

train-embedded-vlm: | $(SETUP)  ## retrain the embedded VLM of notebook 05 (3 stages) into vlmlab/assets/embedded_vlm.safetensors (~18 min, 2 CPU cores)
	$(RUN_ENV) $(PY) -m vlmlab.blind.train_vlm $(TRAIN_ARGS)

evaluate-embedded: | $(SETUP)  ## measure the embedded CLIP; rewrites the numbers in vlmlab/assets/MODEL_CARD.md
	$(RUN_ENV) $(PY) scripts/evaluate_embedded.py

# ---------------------------------------------------------------------------------------
# Sweeps: parameter grids over notebooks, local processes or SLURM (docs/sweeps.md).
# ---------------------------------------------------------------------------------------
# Data and weights of a profile (docs/paper_profile.md): what is missing, and fetch what is downloadable.
# `make data` downloads, so it does not set HF_HUB_OFFLINE; runs (RUN_ENV) keep it.
.PHONY: data data-status
data-status: | $(SETUP)  ## list every dataset and weight file PROFILE needs, where it is looked for and how to get it
	$(PY) -m vlmlab.cli data status --profile $(PROFILE)

data: | $(SETUP)  ## download what PROFILE needs and is publicly downloadable (checksums, atomic, skips what is there)
	VLMLAB_BATCH=1 $(PY) -m vlmlab.cli data fetch --all --profile $(PROFILE)

# The results as one static site, and their headline numbers against params/expected/PROFILE/ (after make reproduce).
.PHONY: report verify
report: | $(SETUP)  ## build RESULTS_DIR/PROFILE/site/index.html: figures, main tables, claims, provenance, executed notebooks
	$(PY) -m vlmlab.cli report --profile $(PROFILE) --results-root $(RESULTS_DIR)

verify: | $(SETUP)  ## compare PROFILE's headline numbers with params/expected/PROFILE/*.json (UPDATE=1 rewrites them)
	$(PY) -m vlmlab.cli verify --profile $(PROFILE) --results-root $(RESULTS_DIR) $(if $(UPDATE),--update)

SWEEP ?= params/sweeps/embedded_small.yaml
sweep: | $(SETUP)  ## run a parameter sweep: SWEEP=params/sweeps/<name>.yaml (SWEEP_ARGS="--workers 4" or "--executor slurm")
	$(RUN_ENV) $(PY) -m vlmlab.cli sweep $(SWEEP) $(SWEEP_ARGS)

# Run first on a new GPU machine (docs/paper_profile.md); no GPU: says so and exits 0.
.PHONY: gpu-check
gpu-check: | $(SETUP)  ## time each notebook's paper code path on random weights: images/s, peak GPU memory, est. GPU hours (GPU_CHECK_ARGS="--quick --json f.json")
	$(RUN_ENV) $(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

.PHONY: gpu-coop-grid
gpu-coop-grid: | $(SETUP)  ## time CoOp steps on the GPU at 6 class counts x 8 variants, one run and batched; sum the paper grid's GPU hours (COOP_GRID_ARGS="--csv f.csv")
	$(RUN_ENV) $(PY) benchmarks/bench_coop_paper_grid.py $(COOP_GRID_ARGS)

bench: | $(SETUP)  ## run every benchmarks/ script (documented settings) -> results/bench/<name>.csv + summary.md
	$(RUN_ENV) $(PY) benchmarks/run_all.py --out $(RESULTS_DIR)/bench $(BENCH_ARGS)

collect: | $(SETUP)  ## merge a sweep's tables into one CSV: SWEEP=... (COLLECT_ARGS="--table tta")
	$(PY) -m vlmlab.cli collect $(SWEEP) $(COLLECT_ARGS)
