# plexsync: the only entry points a newcomer needs.
#   make demo   run the main job end to end (installs what it needs)
#   make test   lint + the whole test suite (installs what it needs)
#   make up / make down   the dev stack in the background
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_SRC := $(wildcard protos/plexsync/v1/*.proto)
PROTO_STAMP := libs/common/plexsync/v1/.generated-stamp
BUF := node_modules/.bin/buf
# The API's descriptor set (every proto and its imports, with comments): for buf curl/grpcurl without reflection,
# gateways and schema registries. Git-ignored (build/).
DESCRIPTOR_SET := build/plexsync.binpb
# Folders mypy checks (those that exist: services land one issue at a time).
MYPY_PATHS = $(wildcard libs/common/plexsync services tools cli tests bench clients/python)

.PHONY: all install proto clients lint buf-lint buf-breaking hygiene typecheck test test-fast up down status demo bench clean

all: install

$(STAMP): pyproject.toml tools/write_pth.py clients/python/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	$(PY) tools/write_pth.py
	$(PY) -m pip install -q --no-build-isolation --no-deps -e clients/python --config-settings editable_mode=compat
	@touch $(STAMP)

install: $(STAMP) $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_SRC) $(STAMP) tools/gen_protos.py
	$(PY) tools/gen_protos.py
	@touch $(PROTO_STAMP)

proto: $(STAMP)
	$(PY) tools/gen_protos.py
	$(PY) tools/gen_api_docs.py
	@touch $(PROTO_STAMP)
	@$(MAKE) --no-print-directory -B $(DESCRIPTOR_SET)

$(DESCRIPTOR_SET): $(PROTO_SRC) $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m grpc_tools.protoc -Iprotos --include_imports --include_source_info --descriptor_set_out=$@ $(PROTO_SRC)

# The clients' generated code (not in git): Python into clients/python/src/plexsync_client/v1, TypeScript with
# `buf generate` (buf.gen.yaml) into clients/typescript/src/gen. tests/contract does the same before it runs.
clients: $(STAMP)
	$(PY) clients/python/src/plexsync_client/_generate.py
	cd clients/typescript && { test -x node_modules/.bin/tsx || npm ci --silent --no-audit --no-fund; }
	clients/typescript/node_modules/.bin/buf generate

$(BUF):
	npm install --silent --no-audit --no-fund --no-save @bufbuild/buf@1 >/dev/null

buf-lint: $(BUF)
	$(BUF) lint

# Stable contracts: the protos must stay wire- and source-compatible with main's (a new field or RPC passes, a removed
# or renumbered one fails). On main itself this compares against the last commit; a clone without a local main
# branch uses origin/main, and one with neither fails saying how to fetch it.
buf-breaking: $(BUF)
	@if git rev-parse -q --verify refs/heads/main >/dev/null; then against='.git#branch=main'; \
	elif git rev-parse -q --verify refs/remotes/origin/main >/dev/null; then against='.git#ref=refs/remotes/origin/main'; \
	else echo "buf breaking: this clone has no main branch to compare with; run 'git fetch origin main'"; exit 1; fi; \
	echo "buf breaking --against $$against"; $(BUF) breaking --against "$$against"

# Known-vulnerable dependencies (prints SKIP when no advisory database is reachable) and committed secrets.
hygiene: install
	$(PY) tools/lint_hygiene.py audit
	$(PY) tools/lint_hygiene.py secrets

lint: install buf-lint buf-breaking hygiene $(DESCRIPTOR_SET)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

typecheck: install
	$(VENV)/bin/mypy $(MYPY_PATHS)

test: lint
	$(PY) -m plexsync.devstack.run_tests

up: install
	$(PY) -m plexsync.devstack up $(if $(TLS),--tls,)

down:
	@if [ -x $(PY) ]; then $(PY) -m plexsync.devstack down; else echo "nothing to stop"; fi

status: install
	$(PY) -m plexsync.devstack status

demo: install
	$(PY) -m plexsync.devstack.demo $(if $(KEEP),--keep,)

bench: install
	$(PY) bench/run_all.py $(if $(QUICK),--quick,)

clean: down
	rm -rf $(VENV) .dev node_modules libs/common/plexsync/v1/*_pb2*
