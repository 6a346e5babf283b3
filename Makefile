# CNN zoo: `make train` and `make test` work as the first command on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := $(shell grep -m1 '^uv==' requirements.lock | cut -d= -f3)

PROFILE ?= default
MODELS ?=
DATASET ?= fashion_mnist
GPU ?= 0
# The Keras backend of every stage: tensorflow or jax (docs/TRAINING.md). Each profile's default
# is the faster one where it runs (docs/BENCHMARKS.md, TensorFlow against JAX): TensorFlow on a
# CPU; JAX for the GPU profile, the backend of the lent GPU machine.
BACKEND ?= $(if $(filter gpu,$(PROFILE)),jax)
PORT ?= 3000
TAG ?= cnn_classifier:latest

export BENTOML_HOME ?= $(CURDIR)/bentoml_home
export BENTOML_DO_NOT_TRACK := True
export TF_CPP_MIN_LOG_LEVEL ?= 2
ifneq ($(BACKEND),)
export KERAS_BACKEND := $(BACKEND)
endif

BENTOFILE := $(if $(filter 1,$(GPU)),bentofile.gpu.yaml,bentofile.yaml)
MODELS_OVERRIDE := $(if $(MODELS),models=[$(MODELS)])

.PHONY: help setup data train next ui mlflow-server serve monitor bento containerize base-image container-test bench gpu-wheels gpu-dry-run results config-reference test test-fast lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

# GPU=1 adds NVIDIA's CUDA wheels: those of tensorflow[and-cuda] (serving/requirements-gpu.txt),
# or with BACKEND=jax those of jax[cuda12] (serving/requirements-gpu-jax.txt). Both are compiled
# against requirements.lock, so nothing else changes version (tests/test_locks.py).
GPU_REQUIREMENTS := serving/requirements-gpu$(if $(filter jax,$(BACKEND)),-jax).txt
GPU_STAMP := $(VENV)/.installed-gpu$(if $(filter jax,$(BACKEND)),-jax)
$(GPU_STAMP): $(STAMP) $(GPU_REQUIREMENTS)
	$(BIN)/uv pip install -q --python $(BIN)/python -r $(GPU_REQUIREMENTS)
	@touch $@

setup: $(STAMP) $(if $(filter 1,$(GPU)),$(GPU_STAMP)) ## Build .venv from requirements.lock (GPU=1: plus the CUDA libraries; BACKEND=jax: JAX's)

data: setup ## Get the dataset (Debian's dataset-fashion-mnist where possible) and print its summary
	@if [ "$(DATASET)" = fashion_mnist ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
	   && [ ! -f data/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt failed; the pipeline will download instead"; \
	fi
	$(BIN)/pipeline data info --dataset $(DATASET)

train: data ## Train the sweep of PROFILE (quick|default|zoo|full|gpu) [MODELS=lenet,vgg] [BACKEND=jax], register the champion, build the bento
	$(BIN)/pipeline train --config configs/$(PROFILE).yaml $(MODELS_OVERRIDE)
	@$(MAKE) --no-print-directory bento
	@$(MAKE) --no-print-directory next

next: # What to do after `make train` (its last lines)
	@printf '%s\n' '' 'Next:' \
	  '  make ui         the runs, their metrics, plots and models: http://127.0.0.1:5000' \
	  '  make serve      the champion over HTTP: http://127.0.0.1:$(PORT) (demo page: /ui/)' \
	  '  curl -F images=@shoe.png http://127.0.0.1:$(PORT)/classify' \
	  '  make results    docs/RESULTS.md: every model on all the data, beside its target'

ui: setup ## MLflow UI on http://127.0.0.1:5000 over the embedded store
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host 127.0.0.1 --port 5000

mlflow-server: setup ## A tracking server on http://127.0.0.1:5000: STORE=postgresql://user@host/db (default: the embedded SQLite file), ARTIFACTS=dir
	$(BIN)/mlflow server --backend-store-uri "$${STORE:-sqlite:///$(CURDIR)/mlflow.db}" \
	  --artifacts-destination "$${ARTIFACTS:-$(CURDIR)/mlartifacts}" --host 127.0.0.1 --port 5000

serve: setup ## Serve the champion on http://127.0.0.1:$(PORT) [BACKEND=jax]
	$(BIN)/bentoml serve serving.service:Classifier --host 127.0.0.1 --port $(PORT)

monitor: setup ## Drift of what the service saw from the champion's reference [SINCE=12h]: report, MLflow run, exit 1 on drift
	$(BIN)/pipeline monitor $(if $(SINCE),--since $(SINCE))

bento: setup ## Build the bento (GPU=1: JAX with its CUDA wheels, for one GPU) and print its tag
	@tag=$$($(if $(filter 1,$(GPU)),SERVING_GPU=1) $(BIN)/bentoml build -f $(BENTOFILE) --output tag | tail -n 1) \
	  && echo "bento: $${tag#__tag__:} (make containerize builds its image)"

containerize: bento ## Build the container image: Docker where an engine runs, else Podman or Buildah (prints the image tag)
	@deploy/container/containerize.sh $(TAG)

base-image: ## Build python:3.11-slim from Debian packages into the local image store, for machines that reach no registry
	deploy/container/base-image.sh

container-test: setup ## Run the built image and check it answers like `bentoml serve` of the same bento, then remove it
	$(BIN)/python -m deploy.container_test $(TAG)

bench: setup ## Benchmarks -> docs/BENCHMARKS.md: WHAT=list says what each part measures and how long; WHAT=all (default), render, or PART[,PART]
	$(BIN)/python -m bench.run $(or $(WHAT),all)

# The wheels for Python 3.12 on x86-64 Linux, as the device tool's README says to fetch them.
PLATFORMS := $(foreach n,1 2014 _2_17 _2_24 _2_26 _2_27 _2_28 _2_31 _2_34,--platform manylinux$(n)_x86_64)

gpu-wheels: setup ## What the GPU proof carries: the wheels of bench/gpu/carried.txt in .whl/, Fashion-MNIST in data/
	rm -rf .whl && $(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(PLATFORMS) -d .whl -r bench/gpu/carried.txt
	mkdir -p data/fashion-mnist && for f in /usr/share/datasets/fashion-mnist/*.gz; do \
	  [ -f "$$f" ] && cp -u "$$f" data/fashion-mnist/; done; $(BIN)/pipeline data info >/dev/null
	@du -sh .whl data/fashion-mnist

gpu-dry-run: gpu-wheels ## The GPU proof (bench/gpu/check.sh) on this CPU, in a clean Python 3.12 holding only what the GPU machine has
	bench/gpu/dry_run.sh

results: setup ## Regenerate docs/RESULTS.md from the MLflow runs [GPU_RUNS=gpu-runs: with the GPU proof's runs]
	$(BIN)/pipeline results $(if $(GPU_RUNS),--gpu-runs $(GPU_RUNS))

config-reference: setup ## Regenerate docs/CONFIG.md from the typed config
	$(BIN)/pipeline config-reference

test: data ## Run the whole test suite (what CI runs)
	$(BIN)/pytest

test-fast: setup ## Unit tests only, in under a minute: no training sweep, servers or dataset on disk
	CNN_ZOO_FAST=1 $(BIN)/pytest -m "not slow and not dataset"

lint: setup ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove caches and checkpoints (keeps .venv, data, the MLflow store and bentos)
	rm -rf .pytest_cache .ruff_cache checkpoints
	find . -name __pycache__ -prune -not -path './.venv/*' -exec rm -rf {} +
