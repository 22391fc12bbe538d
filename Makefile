# The two commands of a fresh clone:  make serve  and  make test.
# Each creates .venv when absent and installs what it needs (stamp files track pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLES := examples/repository
HTTP_PORT ?= 8000

# make protos: the gRPC modules in src/ferry/_pb, from the descriptors of Triton's
# grpc_service.proto and model_config.proto that tritonclient (a test dependency) ships.
# protoc comes from its own venv with grpcio-tools pinned: that version's generated code runs
# on protobuf>=4.25 and grpcio>=1.62, the lower bounds in pyproject.toml.
PROTOS_VENV := .venv-protos
GRPCIO_TOOLS := grpcio-tools==1.62.3 grpcio==1.62.3
PROTOSET := build/protos/triton.protoset

.PHONY: serve test install examples traffic bench check clean protos

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

$(PROTOS_VENV)/bin/python:
	$(PYTHON) -m venv $(PROTOS_VENV)
	$(PROTOS_VENV)/bin/pip install -q $(GRPCIO_TOOLS)

protos: $(VENV)/.installed-dev | $(PROTOS_VENV)/bin/python
	$(BIN)/python scripts/gen_protos.py descriptors $(PROTOSET)
	$(PROTOS_VENV)/bin/python scripts/gen_protos.py generate $(PROTOSET) src/ferry/_pb

clean:
	rm -rf $(VENV) $(PROTOS_VENV) $(EXAMPLES)
