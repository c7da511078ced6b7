# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The server alone: what `make run` needs, installed in seconds.
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test soak lint bench diagram clean system-deps cluster mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[client,load,test,metrics]'
	touch $(STAMP) $(RUN_STAMP)

## run: create .venv, install the server only, start it on 127.0.0.1:5000 (FRAMING=raw for the classroom's client; ARGS=... any flag)
# UPPERECHO_FRAMING=raw (the server's own variable) serves raw framing too: the first line says which.
FRAMING ?= $(UPPERECHO_FRAMING)
run: $(RUN_STAMP)
ifeq ($(FRAMING),raw)
	@echo "upperecho, raw framing: each read is one message, for the classroom's client.py (plain 'make run' takes one message per line)"
else
	@echo "upperecho: one message per line. The classroom's client.py sends no newline: serve it with 'make run FRAMING=raw'"
endif
	@$(BIN)/python -m server $(if $(FRAMING),--framing $(FRAMING)) $(ARGS)

## system-deps: the Debian tools some tests drive (nc; spin and the gcc its checkers and the bench's C0 are built with; openssl for TLS; promtool; haproxy), installed when missing
system-deps:
	@missing=""; \
	command -v nc >/dev/null 2>&1 || missing="$$missing netcat-openbsd"; \
	command -v spin >/dev/null 2>&1 || missing="$$missing spin"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: missing$$missing (tests that need them will say so and be skipped)"; \
	  fi; \
	fi

## test: create/update .venv and run the suite (all but the minutes-long soak: `make soak`) in two processes, a test file each at a time
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -m 'not slow' -n 2 --dist loadfile

## soak: minutes of mixed load with churn; memory, threads and descriptors must stay flat (long; not part of `make test`)
soak: $(STAMP) system-deps
	$(BIN)/python -m pytest -m slow -s

## mutation: mutmut over statemachine/ and a sample of server/worker.py, with a summary (long; not part of `make test`)
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	nice -n 19 $(BIN)/python -m tests.mutation $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

## bench: the benchmark; options through ARGS, e.g. make bench ARGS="--quick"
bench: $(STAMP)
	$(BIN)/python -m loadtest.bench $(ARGS)

## cluster: HAProxy on 127.0.0.1:$(PORT) in front of N servers on loopback (make cluster N=3 ARGS=-q); Ctrl-C stops all
N ?= 3
PORT ?= 5000
cluster: $(STAMP)
	$(BIN)/python deploy/haproxy/cluster.py --servers $(N) --port $(PORT) $(ARGS)

diagram: $(STAMP)
	$(BIN)/python -m statemachine

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
