# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench diagram clean system-deps mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[client,load,test]'
	touch $(STAMP)

## run: create .venv, install, start the server on 127.0.0.1:5000
run: $(STAMP)
	$(BIN)/python -m server

## system-deps: the Debian tools some tests drive (nc; spin and the gcc its checkers are built with), installed when missing
system-deps:
	@missing=""; \
	command -v nc >/dev/null 2>&1 || missing="$$missing netcat-openbsd"; \
	command -v spin >/dev/null 2>&1 || missing="$$missing spin"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: missing$$missing (tests that need them will say so and be skipped)"; \
	  fi; \
	fi

## test: create/update .venv and run the whole suite
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

## test-fast: the suite without the slow soak
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

## mutation: mutmut over statemachine/ and a sample of server/worker.py, with a summary (long; not part of `make test`)
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	nice -n 10 $(BIN)/python -m tests.mutation $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench

diagram: $(STAMP)
	$(BIN)/python -m statemachine

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
