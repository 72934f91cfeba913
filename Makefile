# neurolake: `make demo` runs the lab, `make test` runs every test. Both set the machine up first.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.neurolake-installed
NEUROLAKE := $(VENV)/bin/neurolake
DURATION ?= 0
AIRFLOW ?= 1
HEADSETS ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo test lint test-unit test-integration bench down lock clean

setup: $(STAMP)

# Rebuilt only when the lock or the project definition changes.
$(STAMP): requirements.lock pyproject.toml infra/scripts/setup.sh infra/scripts/fetch_jars.sh infra/jvm/jars.sha256 infra/jvm/kafka/pom.xml infra/jvm/spark/pom.xml
	@infra/scripts/setup.sh

demo: $(STAMP)
	$(NEUROLAKE) demo --duration $(DURATION) --headsets $(HEADSETS) $(if $(filter 1,$(AIRFLOW)),--with-airflow,)

# Style, types and the layer rule (pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pytest's exit 5 (no test collected) is a failure here, not a pass.
test: $(STAMP) lint
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-unit: $(STAMP)
	$(VENV)/bin/pytest -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

bench: $(STAMP)
	@for script in bench/*_bench.py; do echo "== $$script"; $(VENV)/bin/python $$script || exit 1; done

down: $(STAMP)
	$(NEUROLAKE) down

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf .neurolake lake .pytest_cache
