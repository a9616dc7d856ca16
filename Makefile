# Every target is documented in README.md ("Make targets").
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
UV := .tools/bin/uv
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install lock demo up down airflow mlflow test test-fast lint secrets format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# The stamp is newer than both locks once they are installed, so a second `make install` is a no-op.
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --python $(PY) --compile-bytecode requirements.txt requirements-dev.txt
	touch $@

install: $(VENV)/.installed ## create .venv from the locks (bytecode compiled at install time)

lock: | $(UV) ## re-resolve requirements.txt and requirements-dev.txt from the .in files
	$(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		requirements.in -o requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		requirements-dev.in -o requirements-dev.txt

demo: install ## the main job: simulate days and run the pipeline under a local Airflow scheduler
	$(PY) -m include.devtools demo $(ARGS)

demo-cluster: install ## the demo on the cluster profile: PostgreSQL, Redis, S3, MLflow server, Celery workers
	$(PY) -m include.devtools demo-cluster $(ARGS)
.PHONY: demo-cluster

up: install ## start the local Airflow (UI, scheduler, DAG processor, triggerer) and the MLflow UI
	$(PY) -m include.devtools airflow up

down: ## stop everything `make up` started (the MLflow UI too)
	@test -x $(PY) && $(PY) -m include.devtools airflow down || true

airflow: install ## any Airflow CLI command on the local Airflow home (prepared first): ARGS='dags list'
	$(PY) -m include.devtools airflow run -- $(ARGS)

mlflow: install ## serve the MLflow UI on MLOPS_MLFLOW_UI_URL (http://127.0.0.1:5000) in the foreground
	$(PY) -m include.devtools mlflow-ui $(ARGS)

serve: install ## the real-time scoring service on http://127.0.0.1:8000 (ARGS='--port 8001')
	$(PY) -m include.mlops serve $(ARGS)
.PHONY: serve

test: install ## every test tier (unit, DAG integrity, integration, end to end): what CI runs
	$(VENV)/bin/pytest $(ARGS)

test-fast: install ## unit and DAG-integrity tiers only
	$(VENV)/bin/pytest tests/unit tests/dags $(ARGS)

lint: install secrets feast-plan ## ruff lint and format check, the secret scan and the Feast plan
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Scans every file git tracks or would track (new files included, ignored ones not) against a copy
# of the baseline, so the scan never rewrites .secrets.baseline; exit 3 of the hook means only that
# line numbers in the baseline moved. Then every finding in the baseline must be audited as false.
secrets: install ## fail on a secret that .secrets.baseline does not list as an audited false positive
	@set -euo pipefail; \
	baseline=$$(mktemp); trap 'rm -f "$$baseline"' EXIT; cp .secrets.baseline "$$baseline"; \
	listed=$$(git ls-files -z --cached --others --exclude-standard | tr '\0' '\n'); \
	files=(); while IFS= read -r f; do [ -f "$$f" ] && files+=("$$f"); done <<< "$$listed"; \
	rc=0; found=$$($(VENV)/bin/detect-secrets-hook --no-verify --baseline "$$baseline" "$${files[@]}") || rc=$$?; \
	if [ $$rc = 3 ]; then echo "secrets: line numbers in .secrets.baseline are out of date (see README)"; \
	elif [ $$rc != 0 ]; then echo "$$found"; exit $$rc; fi; \
	$(PY) -c 'import json, sys; results = json.load(open(".secrets.baseline"))["results"]; \
	left = [s["filename"] + ":" + str(s["line_number"]) + " " + s["type"] for found in results.values() for s in found if s.get("is_secret") is not False]; \
	sys.exit("not audited as false positives in .secrets.baseline: " + ", ".join(left) if left else 0)'; \
	echo "secrets: $${#files[@]} files scanned, nothing new"

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

feast-apply: install ## deploy the Feast definitions of feature_repo/ to the registry (after changing them)
	$(PY) -m include.mlops features apply
.PHONY: feast-apply

# Against a throwaway registry (a temporary MLOPS_HOME, embedded profile): the plan lists every
# definition as new, the apply registers them, and a second plan must then find nothing to change,
# which is what a materialization checks before it runs.
feast-plan: install ## Feast plan of feature_repo/ against a throwaway registry (run by `make lint`)
	@set -euo pipefail; home=$$(mktemp -d); trap 'rm -rf "$$home"' EXIT; \
	feast() { env -u MLOPS_PROFILE -u MLOPS_FEAST_REGISTRY -u MLOPS_FEAST_ONLINE_PATH -u MLOPS_LAKE_URL \
		MLOPS_HOME="$$home" $(PY) -m include.mlops features "$$@"; }; \
	feast plan; feast apply > /dev/null; feast plan --check
.PHONY: feast-plan

dashboards: install ## rebuild the Evidently workspace from the lake and serve it on :8002 (ARGS='--port 8003')
	$(PY) -m include.devtools dashboards $(ARGS)
.PHONY: dashboards

bench: install ## benchmarks: 100k, 1M and (memory allowing) 10M-row days; print and save figures (never pass/fail on time)
	$(PY) -m include.devtools bench $(ARGS)

clean: down ## remove runtime state (.local/) but keep the environment
	rm -rf .local
