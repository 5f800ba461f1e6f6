# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB ?= sqlite+aiosqlite:///./ioc-demo.db

.PHONY: demo test lint format bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo replays simulated history from scratch, so it starts from a fresh database each time.
demo: $(STAMP)
	rm -f ioc-demo.db ioc-demo.db-wal ioc-demo.db-shm
	IOC_DATABASE_URL=$(DEMO_DB) $(BIN)/ioc migrate
	IOC_DATABASE_URL=$(DEMO_DB) IOC_CONNECTORS_FILE=demo/connectors.toml $(BIN)/ioc demo

# The wall display's browser test drives the system's Chromium (Debian's `chromium` package).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) ioc-demo.db* .pytest_cache .ruff_cache
