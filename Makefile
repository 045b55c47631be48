# syncmos — the two commands a fresh machine needs are `make demo` and `make test`.
# Every target installs what it is missing first and is safe to run twice.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
SERVICES := scripts/services.sh
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000
# The demo is the embedded mode: SQLite file and in-process tasks, unless the caller says otherwise.
DEMO_ENV := DEBUG=1 SECRET_KEY=demo-not-secret SYNCMOS_LSE_DEMO_SYNCNET=1 SYNCMOS_DEMO_HOST=$(DEMO_HOST) SYNCMOS_DEMO_PORT=$(DEMO_PORT)

bench: install
	$(PY) benchmarks/bench_models.py

# Retrain the committed tiny demo weights (demo/weights/) from scratch: corpus, then every stage, fixed seeds.
demo-weights: install
	$(DEMO_ENV) $(PY) manage.py train_demo_weights

bench-training: install
	$(PY) benchmarks/bench_training.py

# Objective metrics against their reference implementations (skimage, pytorch-fid's sqrtm, syncnet_python's loop).
bench-metrics: install
	$(PY) benchmarks/bench_metrics.py

# Statistics at 100,000 ratings: agreement and bootstrap, mixed model and subject model against their references.
bench-analysis: install
	$(PY) benchmarks/bench_analysis_agreement.py
	$(PY) benchmarks/bench_analysis_models.py

# Load: 200 simulated participants at once against gunicorn + PostgreSQL on loopback (a throwaway database):
# no rating lost or doubled, no 5xx; p50/p99 of the rating POST against a trivial view on the same server.
bench-load: install
	$(SERVICES) start >/dev/null
	eval "$$($(SERVICES) env)" && $(PY) benchmarks/bench_load.py

# The assignment planner at 10,000 clips for every method and content limit, against the plain least-covered pick.
bench-assignment: install
	$(PY) benchmarks/bench_assignment.py

.PHONY: bench-assignment demo demo-weights bench-training bench-metrics bench-analysis bench-load test bench install system-deps services services-stop worker-gpu worker-cpu web clean

demo: install
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py build_demo
	$(DEMO_ENV) $(PY) manage.py runserver --noreload $(DEMO_HOST):$(DEMO_PORT)

test: install
	$(SERVICES) start >/dev/null
	eval "$$($(SERVICES) env)" && SYNCMOS_REQUIRE_SERVICES=1 $(PY) -m pytest

install: system-deps $(STAMP)

system-deps:
	@scripts/system-deps.sh

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
		|| { echo "syncmos needs Python 3.11 (found: $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first, from the pinned CPU build, so nothing later can pull a CUDA build. Where no local
	# CPU wheel is configured for pip, use TORCH_INDEX=https://download.pytorch.org/whl/cpu.
	$(PY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# lpips only for the LPIPS heads it ships (weights/v0.1/*.pth; generation/perceptual_weights.py reads them
	# without importing the package). Its metadata requires torchvision, which would pull a CUDA torch, so it
	# is installed on its own with --no-deps (version pinned in constraints.txt) and is not in pyproject.toml.
	$(PY) -m pip install -q -c constraints.txt --no-deps lpips
	touch $(STAMP)

# The deployment topology as plain processes (docker-compose.yml runs the same commands).
services:
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

worker-gpu: install
	eval "$$($(SERVICES) env)" && $(VENV)/bin/celery -A studyapp worker -Q gpu -n gpu@%h --concurrency=1 --prefetch-multiplier=1 -l info

worker-cpu: install
	eval "$$($(SERVICES) env)" && $(VENV)/bin/celery -A studyapp worker -Q cpu -n cpu@%h --concurrency=2 --prefetch-multiplier=1 -l info

web: install
	eval "$$($(SERVICES) env)" && DEBUG=1 SECRET_KEY=dev $(VENV)/bin/gunicorn studyapp.wsgi -b $(DEMO_HOST):$(DEMO_PORT) -w 2

clean:
	rm -rf $(VENV) var .pytest_cache
