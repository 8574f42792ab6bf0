# govnode: the two commands a new machine needs are `make demo` and `make test`.
# Each sets everything up first (a virtualenv in .venv with the project and its dev tools).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser examples demo test check lint types layers protos protos-check ci clean bench htmx console-screenshot

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Run the demo: a province node on loopback with fresh PKI and the example catalog.
demo: install
	$(BIN)/govnode demo

## Debian's chromium and a Simplified Chinese font for the portal's browser tests (apt-get,
## as root or through sudo; nothing when both are there).
browser:
	bash scripts/install_browser.sh

## What the agency examples in Node and Java need (tests/sdk/test_examples.py): node, npm and
## the example's pinned npm packages; a JDK with Debian's grpc-java, protobuf-java and protoc.
examples:
	bash scripts/install_examples.sh

## The operator console's screenshot in the README (docs/console-overview.png), taken by its
## browser test.
console-screenshot: install browser
	mkdir -p docs
	GOVNODE_CONSOLE_SCREENSHOT=$(CURDIR)/docs/console-overview.png $(BIN)/python -m pytest -q \
		tests/console/test_browser.py -k maintenance_switch

## Vendor htmx for the console (HTMX_VERSION=2.0.x): npm pack in a temporary directory, copy
## dist/htmx.min.js, record its SHA-256 in node/console/static/VERSION (checked by the tests).
HTMX_VERSION ?= 2.0.11
htmx:
	bash scripts/vendor_htmx.sh $(HTMX_VERSION)

## Run the whole test suite on every core (set GOVNODE_TEST_POSTGRES_URL to include PostgreSQL).
test: install browser examples
	$(BIN)/python -m pytest -n auto

## Static checks: generated stubs match the .proto files, ruff (lint and format), the import rules, mypy.
check: install protos-check lint layers types

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install
	$(BIN)/mypy
	$(BIN)/mypy scripts

## The import rules of the layout (README, Layout): layers, domain packages, public faces, cycles.
layers: install
	$(BIN)/python scripts/check_layers.py

protos: install
	$(BIN)/python scripts/gen_protos.py

protos-check: install
	$(BIN)/python scripts/gen_protos.py --check

ci: check test

## Benchmarks: govnode figures next to baselines measured in the same run (see bench/).
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-run
