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
# Folders mypy checks (those that exist: services land one issue at a time).
MYPY_PATHS = $(wildcard libs/common/plexsync services tools cli tests bench)

.PHONY: all install proto lint buf-lint typecheck test test-fast up down status demo bench clean

all: install

$(STAMP): pyproject.toml tools/write_pth.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	$(PY) tools/write_pth.py
	@touch $(STAMP)

install: $(STAMP) $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_SRC) $(STAMP) tools/gen_protos.py
	$(PY) tools/gen_protos.py
	@touch $(PROTO_STAMP)

proto: $(STAMP)
	$(PY) tools/gen_protos.py
	@touch $(PROTO_STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --no-save @bufbuild/buf@1 >/dev/null

buf-lint: $(BUF)
	$(BUF) lint

lint: install buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

typecheck: install
	$(VENV)/bin/mypy $(MYPY_PATHS)

test: lint
	$(PY) -m plexsync.devstack.run_tests

up: install
	$(PY) -m plexsync.devstack up

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
