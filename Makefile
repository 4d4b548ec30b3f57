# Keyart: `make run` serves the platform on its embedded defaults, `make test` runs the suite.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := protos/keyart/v1/ranking.proto
STUBS := services/keyart/v1/ranking_pb2.py

.DEFAULT_GOAL := help

help: ## List targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install Keyart with its pinned dependencies

protos: $(STAMP) ## Regenerate the Python stubs (and .pyi) from protos/
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=services --pyi_out=services \
		--grpc_python_out=services $(PROTO_SRC)

features: $(STAMP) ## Build the demo world and its Feast store (apply + materialize)
	$(BIN)/keyart world build
	$(BIN)/keyart features apply

model: $(STAMP) ## Train the first LightGBM model from a simulated exploration log
	$(BIN)/keyart train --bootstrap

run: protos ## Build what is missing, then serve RankArtwork on Ray Serve (port 9000)
	$(BIN)/keyart up

demo: $(STAMP) ## Show which image contrasting demo members get, and why
	$(BIN)/keyart demo

test: $(STAMP) ## Run the whole suite (unit + integration on loopback)
	$(BIN)/python -m pytest

bench: $(STAMP) ## Throughput and latency, Ray Serve vs bare grpc.aio; writes bench/results/latest.json
	$(BIN)/keyart bench --json

bench-quality: $(STAMP) ## Decision quality on held-out decisions vs peers; writes bench/results/quality.json
	PYTHONPATH=bench $(BIN)/python -m quality.run $(QUALITY_ARGS)

bench-soak: $(STAMP) ## RSS of the bare gRPC server over 10k fuzz cases then 10k valid pages; writes bench/results/soak.json
	PYTHONPATH=bench/soak:tests $(BIN)/python bench/soak/run.py $(SOAK_ARGS)

bench-log: $(STAMP) ## Decision log on a live Cassandra node vs SQLite: writes/s, export rate, RankArtwork p99; writes bench/results/log.json
	$(BIN)/python -m keyart.app.bench_log $(LOG_BENCH_ARGS)

lint: $(STAMP) ## ruff, mypy (generated code excluded) and the import-layer contracts
	$(BIN)/ruff check services training tests bench
	$(BIN)/mypy services/keyart training
	MYPYPATH=services:training:bench $(BIN)/mypy bench/quality bench/soak  # the benches call the core too
	$(BIN)/lint-imports

cassandra: $(STAMP) ## Start a local single-node Cassandra (jars from Maven Central, data in var/cassandra)
	$(BIN)/python -m keyart.app.cassandra_node start $(CASSANDRA_ARGS)

cassandra-stop: $(STAMP) ## Stop the Cassandra that `make cassandra` started
	$(BIN)/python -m keyart.app.cassandra_node stop

clean: ## Remove built data (var/), keep the venv
	rm -rf var

.PHONY: help install protos features model run demo test bench bench-quality bench-soak bench-log lint cassandra cassandra-stop clean
