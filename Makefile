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
PORT ?= 3000
TAG ?= cnn_classifier:latest

export BENTOML_HOME ?= $(CURDIR)/bentoml_home
export BENTOML_DO_NOT_TRACK := True
export TF_CPP_MIN_LOG_LEVEL ?= 2

BENTOFILE := $(if $(filter 1,$(GPU)),bentofile.gpu.yaml,bentofile.yaml)
MODELS_OVERRIDE := $(if $(MODELS),models=[$(MODELS)])

.PHONY: help setup data train ui mlflow-server serve bento containerize base-image container-test bench bench-serving bench-training bench-zoo bench-views bench-model-call bench-history bench-soak bench-faults results test test-fast lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

# GPU=1 adds the CUDA wheels of tensorflow[and-cuda], pinned in serving/requirements-gpu.txt
# (compiled against requirements.lock, so nothing else changes version; tests/test_locks.py).
GPU_STAMP := $(VENV)/.installed-gpu
$(GPU_STAMP): $(STAMP) serving/requirements-gpu.txt
	$(BIN)/uv pip install -q --python $(BIN)/python -r serving/requirements-gpu.txt
	@touch $@

setup: $(STAMP) $(if $(filter 1,$(GPU)),$(GPU_STAMP)) ## Build .venv from requirements.lock (GPU=1: plus the CUDA libraries, for training on a GPU)

data: setup ## Get the dataset (Debian's dataset-fashion-mnist where possible) and print its summary
	@if [ "$(DATASET)" = fashion_mnist ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
	   && [ ! -f data/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt failed; the pipeline will download instead"; \
	fi
	$(BIN)/pipeline data info --dataset $(DATASET)

train: data ## Train the sweep of PROFILE (quick|default|full) [MODELS=lenet,vgg], register the champion, build the bento
	$(BIN)/pipeline train --config configs/$(PROFILE).yaml $(MODELS_OVERRIDE)
	$(MAKE) --no-print-directory bento

ui: setup ## MLflow UI on http://127.0.0.1:5000 over the embedded store
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host 127.0.0.1 --port 5000

mlflow-server: setup ## A tracking server on http://127.0.0.1:5000: BACKEND=postgresql://user@host/db (default: the embedded SQLite file), ARTIFACTS=dir
	$(BIN)/mlflow server --backend-store-uri "$${BACKEND:-sqlite:///$(CURDIR)/mlflow.db}" \
	  --artifacts-destination "$${ARTIFACTS:-$(CURDIR)/mlartifacts}" --host 127.0.0.1 --port 5000

serve: setup ## Serve the champion on http://127.0.0.1:$(PORT)
	$(BIN)/bentoml serve serving.service:Classifier --host 127.0.0.1 --port $(PORT)

bento: setup ## Build the bento (GPU=1: CUDA image with tensorflow[and-cuda])
	$(if $(filter 1,$(GPU)),SERVING_GPU=1) $(BIN)/bentoml build -f $(BENTOFILE)

containerize: bento ## Build the container image: Docker where an engine runs, else Podman or Buildah (prints the image tag)
	@deploy/container/containerize.sh $(TAG)

base-image: ## Build python:3.11-slim from Debian packages into the local image store, for machines that reach no registry
	deploy/container/base-image.sh

container-test: setup ## Run the built image and check it answers like `bentoml serve` of the same bento, then remove it
	$(BIN)/python -m deploy.container_test $(TAG)

bench: setup ## Training and serving benchmarks -> docs/BENCHMARKS.md
	$(BIN)/python -m bench.run

bench-serving: setup ## Serving benchmarks again (throughput, model call, after load, views, MLflow peer), keeping the rest
	$(BIN)/python -m bench.run --serving

bench-training: setup ## Training benchmarks again, keeping the serving figures -> docs/BENCHMARKS.md
	$(BIN)/python -m bench.run --training

bench-zoo: setup ## The zoo loop's augmentation and batch-norm benchmark again, keeping the rest
	$(BIN)/python -m bench.run --zoo

bench-views: setup ## Serving choices side by side (views, batch norm, event loop) again, keeping the rest
	$(BIN)/python -m bench.run --views

bench-model-call: setup ## The model call by thread pools, traced and batch norm, again, keeping the rest
	$(BIN)/python -m bench.run --model-call

bench-history: setup ## Latency after load (eager against CORK, each beside an untouched server) again, keeping the rest
	$(BIN)/python -m bench.run --history

bench-soak: setup ## The 10-minute serving soak again, keeping the rest -> docs/BENCHMARKS.md
	$(BIN)/python -m bench.run --soak

bench-faults: setup ## Decode floods against /livez and a worker killed mid-burst again, keeping the rest
	$(BIN)/python -m bench.run --faults

results: setup ## Regenerate docs/RESULTS.md from the MLflow runs
	$(BIN)/pipeline results

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
