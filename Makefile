# flinkrec: every target bootstraps what it needs (venv, jars, services) and can be rerun.
# `make help` lists the targets.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JARS_STAMP := var/jars/.stamp
JVM_JAR := var/jars/flinkrec/flinkrec-jvm.jar
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: chromium promtool help venv jars services-up services-down services-status run live job produce catalog serve \
        test test-unit lint config-docs eval bench bench-api ab-report clean distclean cluster-up cluster-down cluster-status submit savepoint resume

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (3.10 or 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing pinned packages into $(VENV) (first time: ~2 min, ~1 GB)"
	$(PY) -m pip install -q --upgrade "pip>=23" 
	$(PY) -m pip install -q -e '.[dev]'
	@# MovieLens-100K ships inside the recbole wheel; --no-deps keeps torch out.
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	@touch $@

venv: $(STAMP) ## create .venv with the pinned packages (and MovieLens via recbole --no-deps)

$(JARS_STAMP): deploy/maven/pom.xml
	bash deploy/services.sh jars

$(JVM_JAR): $(wildcard jvm/src/flinkrec/*.java) jvm/build.sh $(STAMP) $(JARS_STAMP)
	PY=$(PY) bash jvm/build.sh

jars: $(JARS_STAMP) $(JVM_JAR) ## fetch the Kafka broker and connector jars from Maven Central, build the job's JVM jar

services-up: $(STAMP) $(JARS_STAMP) $(JVM_JAR) ## start Kafka (KRaft, 127.0.0.1:9092) and Redis (127.0.0.1:6379)
	bash deploy/services.sh up

services-down: ## stop Kafka and Redis
	bash deploy/services.sh down

services-status: ## show whether Kafka and Redis answer
	@bash deploy/services.sh status

run: services-up ## the demo: replay MovieLens-100K through Kafka -> Flink -> Redis/Kafka, print recommendations
	$(PY) -m tools.demo $(ARGS)

ab-report: services-up ## the running experiment's arms compared (hit rate, NDCG, 95% intervals, z-test), from its topic
	$(PY) -m tools.ab_report $(ARGS)

live: services-up ## run the job unbounded from its latest state (ARGS=--fresh: anew); Ctrl-C stops it with a savepoint
	$(PY) -m jobs.recommend $(ARGS)

produce: services-up ## replay MovieLens-100K into the events topic (ARGS="--rate 1000" to pace it)
	$(PY) -m ingest.producer $(ARGS)

catalog: services-up ## publish the item catalog to the items topic and Redis
	$(PY) -m ingest.catalog $(ARGS)

serve: services-up ## the HTTP API and live page on http://127.0.0.1:8000
	$(PY) -m serving $(ARGS)

cluster-up: $(STAMP) $(JARS_STAMP) $(JVM_JAR) ## start a local Flink cluster (JobManager + TaskManager JVMs), UI http://127.0.0.1:8081
	$(PY) -m deploy.cluster up

cluster-down: ## stop the local Flink cluster (running jobs stop too: `make savepoint` first)
	$(PY) -m deploy.cluster down

cluster-status: ## the local Flink cluster's slots and jobs
	@$(PY) -m deploy.cluster status

submit: services-up cluster-up ## submit the job to the cluster (PARALLELISM=N, ARGS="--set k=v"); prints the job id
	$(PY) -m deploy.submit submit $(if $(PARALLELISM),--parallelism $(PARALLELISM)) $(ARGS)

savepoint: ## stop the submitted job with a savepoint under var/flink/savepoints; prints its path
	$(PY) -m deploy.submit savepoint $(ARGS)

resume: services-up cluster-up ## resume from the job identity's newest savepoint (PARALLELISM=2 default, SAVEPOINT=path)
	$(PY) -m deploy.submit resume --parallelism $(or $(PARALLELISM),2) $(if $(SAVEPOINT),--savepoint $(SAVEPOINT)) $(ARGS)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

config-docs: $(STAMP) ## regenerate docs/configuration.md from config/default.yaml (a test fails when it is stale)
	$(PY) -m config.reference

test-unit: $(STAMP) ## fast tests of the pure-Python parts (no JVM, no services)
	$(VENV)/bin/pytest -m "not flink and not integration" $(PYTEST_ARGS)

chromium: ## install Debian's chromium for the browser test (no browser download)
	@command -v chromium >/dev/null || { echo "[make] installing Debian's chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >var/apt-chromium.log 2>&1 \
	  || { echo "apt-get install chromium failed, see var/apt-chromium.log"; exit 1; }; }

promtool: ## install Debian's prometheus (promtool checks the alert rules; the metrics test queries a real server)
	@command -v promtool >/dev/null || { echo "[make] installing Debian's prometheus (apt-get)"; mkdir -p var; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	  >var/apt-prometheus.log 2>&1 || { echo "apt-get install prometheus failed, see var/apt-prometheus.log"; exit 1; }; }

test: lint services-up chromium promtool ## everything: lint, unit, mini-cluster and integration tests (what CI runs)
	REQUIRE_SERVICES=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

eval: $(STAMP) ## every mode on MovieLens-100K: prequential, random 75/25, per-user temporal, leave-last-one-out, MMR diversity, bounds, low ratings as dislikes -> results/eval/
	$(PY) -m evaluation $(ARGS)

bench: services-up ## throughput, freshness and scale benchmarks -> results/bench/
	$(PY) -m bench $(ARGS)

bench-api: services-up ## API latency: GET recommendations at 500 req/s, then 20-item sessions at 200 req/s, 30 s each -> results/bench-api.json
	$(PY) -m serving.bench_api $(ARGS)

clean: ## remove caches, results and service data (keeps .venv and jars)
	-$(PY) -m deploy.cluster down
	-bash deploy/services.sh down
	rm -rf var/kafka var/redis var/flink var/log var/checkpoints var/savepoints var/test-checkpoints var/test-artifacts \
	       results .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and the downloaded jars
	rm -rf $(VENV) var
