# One entry point for everything: `make demo`, `make test`, `make check`.
# Every target installs what it needs itself, idempotently; nothing is
# downloaded at run time except packages from PyPI and modules from the Go
# module proxy.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The local tools (control plane, process-kubelet) live beside the product.
export PYTHONPATH := $(CURDIR)/tools$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -qq --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv with the engine, the operator and the dev tools

.PHONY: constraints
constraints: ## Move constraints.txt to the newest releases pyproject.toml allows (then run make test)
	rm -rf $(VENV).constraints
	$(PYTHON) -m venv $(VENV).constraints
	$(VENV).constraints/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; \
	  $(VENV).constraints/bin/pip freeze --exclude-editable --disable-pip-version-check \
	    | grep -v '^revisor=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(VENV).constraints

.PHONY: demo
demo: $(STAMP) ## Run the main job: a migration applied by the operator on a local control plane
	scripts/demo.sh

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: check
check: $(STAMP) ## Lint, format check, mypy strict, import contracts, shellcheck, chart lint, manifests up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	scripts/shellcheck.sh
	scripts/render-manifests.sh --check
	"$$(scripts/helm.sh)" lint --strict --quiet charts/revisor charts/revisor-migration

.PHONY: helm
helm: ## Build (once, cached outside the repo) or find the pinned Helm
	scripts/helm.sh

.PHONY: manifests
manifests: ## Render manifests/ from charts/revisor (the single source of truth)
	scripts/render-manifests.sh

.PHONY: manifests-check
manifests-check: ## Fail when manifests/ is out of date with charts/revisor
	scripts/render-manifests.sh --check

.PHONY: kube-binaries
kube-binaries: ## Build (once, cached outside the repo) or find the Kubernetes binaries
	scripts/kube-binaries.sh

.PHONY: postgres
postgres: ## Make sure PostgreSQL's server binaries exist (the suite starts its own cluster)
	scripts/ensure-postgres.sh

.PHONY: mariadb
mariadb: ## Make sure MariaDB's server binaries exist (the suite starts its own server)
	scripts/ensure-mariadb.sh

.PHONY: test
test: check postgres mariadb $(if $(REVISOR_TEST_KUBECONFIG),,kube-binaries) ## Everything CI runs: checks, then the whole test suite
	$(PY) -m pytest

.PHONY: test-fast
test-fast: $(STAMP) postgres mariadb ## Tests that need no control plane
	$(PY) -m pytest -m "not cluster"

.PHONY: cluster-up
cluster-up: $(STAMP) kube-binaries ## Start a local control plane + process-kubelet; kubeconfig in .local/kubeconfig
	scripts/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop what cluster-up started
	scripts/cluster-down.sh

.PHONY: bench
bench: $(STAMP) $(if $(REVISOR_BENCH_SKIP_OPERATOR),,kube-binaries) ## Benchmarks (bench/, docs/performance.md); results in bench/results/
	$(PY) bench/import_cost.py
	$(PY) bench/noop_vs_alembic.py
	$(PY) bench/upgrade_vs_alembic.py --rounds 11
	$(PY) bench/upgrade_phases.py
	$(PY) bench/history_row.py
	$(PY) bench/soak.py
	$(if $(REVISOR_BENCH_SKIP_OPERATOR),@echo "operator_burst skipped (REVISOR_BENCH_SKIP_OPERATOR)",$(PY) bench/operator_burst.py)
	$(if $(REVISOR_BENCH_SKIP_OPERATOR),@echo "fleet_rollout skipped (REVISOR_BENCH_SKIP_OPERATOR)",$(PY) bench/fleet_rollout.py)

.PHONY: clean
clean: ## Remove the virtualenv and caches (not the cached Kubernetes binaries)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .local
