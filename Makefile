# Gatehouse: `make run` starts the gateway on the quick-start policy, `make test` runs the suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LISTEN ?= 127.0.0.1:8080
POLICY ?= policies/quickstart.toml
NODE_TOOLS := .tools/node
CLAUDE := $(NODE_TOOLS)/node_modules/.bin/claude
PYTEST_ARGS ?=

.PHONY: install run test test-unit bench demo clean claude-cli

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

# The Claude Code CLI from the npm registry, into a git-ignored folder.
$(CLAUDE):
	@mkdir -p $(NODE_TOOLS)
	@[ -f $(NODE_TOOLS)/package.json ] || echo '{"private": true}' > $(NODE_TOOLS)/package.json
	cd $(NODE_TOOLS) && npm install --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code

claude-cli: $(CLAUDE)

run: install
	$(VENV)/bin/gatehouse run --policy $(POLICY) --listen $(LISTEN)

test: install claude-cli
	GATEHOUSE_CLAUDE_BIN=$(abspath $(CLAUDE)) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m 'not e2e' $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/proxy_overhead.py

clean:
	rm -rf $(VENV) .tools .pytest_cache build *.egg-info
