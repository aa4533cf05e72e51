# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use (torch pinned to the CPU wheel) and reuse it afterwards.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sideman-installed
FRONTEND := web_monitor/frontend
NODE_STAMP := $(FRONTEND)/node_modules/.sideman-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The monitor's front-end packages, from the npm registry through the lockfile.
$(NODE_STAMP): $(FRONTEND)/package.json $(FRONTEND)/package-lock.json
	npm ci --prefix $(FRONTEND) --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

setup: $(STAMP) $(NODE_STAMP)

demo: $(STAMP) $(NODE_STAMP)
	$(BIN)/sideman generate --demo --track 3 --bars 4-7 demo-in.mid demo-out.mid

test: $(STAMP) $(NODE_STAMP)
	node --test $(FRONTEND)/test/
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check engine dsp daemon web_monitor tests

bench: $(STAMP)
	$(BIN)/sideman bench tokenizer
	$(BIN)/sideman bench generate

clean:
	rm -rf $(VENV) $(FRONTEND)/node_modules demo-in.mid demo-out.mid
