# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use (torch pinned to the CPU wheel) and reuse it afterwards.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sideman-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/sideman generate --demo --random-init --track 3 --bars 4-7 demo-in.mid demo-out.mid

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check engine dsp daemon web_monitor tests

bench: $(STAMP)
	$(BIN)/sideman bench tokenizer
	$(BIN)/sideman bench generate

clean:
	rm -rf $(VENV) demo-in.mid demo-out.mid
