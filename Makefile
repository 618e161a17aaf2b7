# Gatehouse: `make run` starts the gateway on the quick-start policy, `make test` runs the suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LISTEN ?= 127.0.0.1:8080
POLICY ?= policies/quickstart.toml
NODE_TOOLS := .tools/node
CLAUDE := $(NODE_TOOLS)/node_modules/.bin/claude
# Node tools the tests use: the Claude Code CLI, a real OpenID Provider for interop tests,
# and Playwright's driver for the report's browser tests (it drives Debian's chromium).
NODE_PACKAGES := @anthropic-ai/claude-code oidc-provider@^9.13.3 playwright-core@^1.65
PYTEST_ARGS ?=

.PHONY: install run test test-unit lint format bench demo clean node-tools

# The stamp depends on pyproject.toml so that a changed dependency list re-installs.
$(VENV)/.installed: pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
		python=$$(sh scripts/find_python.sh); \
		echo "Creating $(VENV) with $$python"; \
		rm -rf $(VENV); \
		"$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# The Claude Code CLI and other Node tools from the npm registry, into a git-ignored folder.
# The stamp depends on the Makefile, so a changed package list re-installs.
$(NODE_TOOLS)/.installed: Makefile
	@mkdir -p $(NODE_TOOLS)
	@[ -f $(NODE_TOOLS)/package.json ] || echo '{"private": true}' > $(NODE_TOOLS)/package.json
	cd $(NODE_TOOLS) && npm install --no-audit --no-fund --loglevel=error $(NODE_PACKAGES)
	@touch $@

node-tools: $(NODE_TOOLS)/.installed

run: install
	$(VENV)/bin/gatehouse run --policy $(POLICY) --listen $(LISTEN)

test: install node-tools
	GATEHOUSE_CLAUDE_BIN=$(abspath $(CLAUDE)) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m 'not e2e' $(PYTEST_ARGS)

# ruff's lint rules and format check (configured in pyproject.toml); `make format` applies both fixes.
LINT_PATHS := addons scripts tests benchmarks
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: install
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# Each benchmark prints its figures against a baseline measured in the same run.
bench: install
	$(PY) benchmarks/proxy_overhead.py
	$(PY) benchmarks/proxy_overhead.py --stream
	$(PY) benchmarks/masking_throughput.py
	$(PY) benchmarks/token_verify.py
	$(PY) benchmarks/recording_size.py
	$(PY) benchmarks/report_scale.py
	$(PY) benchmarks/command_rules.py
	$(PY) benchmarks/stream_delay.py
	$(PY) benchmarks/buffered_latency.py
	$(PY) benchmarks/session_cpu.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/recording_path.py
	$(PY) benchmarks/core_costs.py

# A scripted agent session through a real gateway and fake upstream, then its report.
demo: install
	$(PY) scripts/demo.py --out report/demo --screenshot report/demo/screenshot.png
	@echo "open report/demo/index.html"

clean:
	rm -rf $(VENV) .tools .pytest_cache build *.egg-info
