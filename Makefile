# The project's verbs. `make help` lists them; `make ci` is what CI runs on a clean clone
# (.ci/run installs what is missing, then runs it). The GitHub workflow's test,
# validation and drill jobs run these same targets (`make validate` checks that every
# step of `make ci` is run there), so that CI and a laptop run the same commands.
#
# Each target is a thin name for one command: the commands themselves live in scripts/
# (their headers say what they need and what they prove) and in cargo.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory
# One verb at a time: the drills and the benchmark judge timings on a shared 2-core machine.
.NOTPARALLEL:
# the tools scripts/install-deps installs (the scripts find them the same way)
export PATH := $(CURDIR)/target/tools/venv/bin:$(CURDIR)/target/tools/bin:$(PATH)

# The steps of `make ci`, in order: the fast checks first, the drills last.
CI_STEPS := fmt-check lint test validate image status-page exemplars queries fuzz reliability e2e-compose drill-quick

.PHONY: help run test fmt fmt-check lint validate image status-page exemplars queries fuzz reliability \
	e2e-compose e2e-kubernetes drill drill-quick bench soak deps tools-lock ci prometheusrule slo

help: ## list the verbs
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## the service and its database on the real Docker engine (docker compose up --build)
	docker compose up --build

test: ## the service's tests against a real, throwaway PostgreSQL (cargo test)
	cargo test --locked

fmt: ## format the Rust code
	cargo fmt --all

fmt-check: ## fail on unformatted Rust code
	cargo fmt --all --check

lint: ## clippy on every target, warnings as errors; ruff over the toolkit in scripts/; shellcheck
	cargo clippy --all-targets --locked -- -D warnings
	ruff check --no-cache scripts
	scripts/lint-shell

validate: ## every static check of what is not Rust (make validate AREAS="k8s monitoring" for some)
	scripts/validate $(if $(filter command line,$(origin AREAS)),$(AREAS))

prometheusrule: ## regenerate the production PrometheusRule and AlertmanagerConfig
	scripts/gen-prometheusrule

slo: ## regenerate the SLO rules, their tests and dashboard rows from monitoring/slo/, then the PrometheusRule
	python3 scripts/lib/slo.py generate
	scripts/gen-prometheusrule

image: ## farol:dev as docker compose builds it; its binary copied to target/image/farol
	scripts/build-image

status-page: ## the browser status page, in headless Chromium
	scripts/check-status-page

exemplars: ## a real Prometheus stores the trace ids farol puts on its latency histogram
	scripts/check-exemplars

queries: ## every rule and dashboard query against a live Prometheus scraping farol
	scripts/check-queries

fuzz: ## schemathesis against the OpenAPI document: no 5xx, answers match it
	scripts/fuzz-api

reliability: ## the reliability drills: shutdown, outage, overload, hostile input, memory, failover, pooler, pitr
	scripts/reliability

e2e-compose: ## the compose stack end to end on the real Docker engine
	scripts/e2e-compose

e2e-kubernetes: ## the minikube overlay end to end on the current kubectl cluster (farol:dev loaded)
	scripts/e2e-kubernetes

drill-quick: ## the fire drill's quick run: every page (about 15 minutes)
	scripts/fire-drill --quick

drill: ## the full fire drill: every alert fired, inhibited and resolved (about 28 minutes)
	scripts/fire-drill

bench: ## the benchmark table; farol against the baseline server, pgbench and itself at depth (about 15 minutes, plus the build)
	scripts/bench

soak: ## ten minutes of mixed load: memory, latency and errors per minute
	scripts/bench --soak

deps: ## install what this machine lacks (Debian, as root)
	scripts/install-deps

tools-lock: ## resolve scripts/tools-versions.txt into the hashed scripts/tools-lock.txt (pip-compile, in a throwaway venv)
	scripts/lock-tools

ci: ## everything CI runs, each step timed (.ci/run: deps, then this)
	+@scripts/lib/ci-steps $(CI_STEPS)
