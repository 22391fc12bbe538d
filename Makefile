# The two commands of a fresh clone:  make serve  and  make test.
# Each creates .venv when absent and installs what it needs (stamp files track pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLES := examples/repository
HTTP_PORT ?= 8000

.PHONY: serve test install examples traffic bench check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[examples]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed-serve

$(EXAMPLES)/.complete: scripts/make_example_repo.py examples/iris_features_model.py | $(VENV)/.installed-serve
	$(BIN)/python scripts/make_example_repo.py $(EXAMPLES)
	touch $@

examples: $(EXAMPLES)/.complete

serve: $(VENV)/.installed-serve $(EXAMPLES)/.complete
	$(BIN)/ferry serve $(EXAMPLES) --http-port $(HTTP_PORT)

# with `make serve` running: example requests to iris, two features shifted, labels for half
traffic: $(VENV)/.installed-serve $(EXAMPLES)/.complete
	$(BIN)/python scripts/traffic.py --url http://127.0.0.1:$(HTTP_PORT) --model iris --drift --feedback 0.5

test: $(VENV)/.installed-dev $(EXAMPLES)/.complete
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/serving.py

check: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts bench

clean:
	rm -rf $(VENV) $(EXAMPLES)
