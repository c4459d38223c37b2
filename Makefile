# The two commands of the README: `make book` and `make test`. Both set up .venv first.
PY      := .venv/bin/python
STAMP   := .venv/.setup-done
PRESET  ?= cpu
export PYTHONHASHSEED := 0

.PHONY: setup book test lint unit nbval browser bench reproduce execute clean

$(STAMP): requirements.txt pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(STAMP)

## The rendered book (HTML, offline, warnings as errors) in _build/html.
book: $(STAMP)
	bash scripts/build_book.sh

## The whole suite: lint, unit tests, every notebook under nbval, the book, the browser test.
test: lint unit nbval book browser

lint: $(STAMP)
	$(PY) -m ruff check d2l_local tests scripts chapters

unit: $(STAMP)
	$(PY) -m pytest -q tests --ignore=tests/browser

nbval: $(STAMP)
	D2L_LOCAL_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest -q --nbval-lax -p no:randomly chapters

browser: $(STAMP)
	$(PY) -m pytest -q tests/browser

## Speed of d2l_local against the seeds' own d2l pipeline, measured side by side.
bench: $(STAMP)
	$(PY) -m d2l_local bench --json

## Re-run every experiment at PRESET (cpu or gpu), training every run again, and refresh results/.
reproduce: $(STAMP)
	$(PY) -m d2l_local experiment all --preset $(PRESET) --fresh

## Execute every chapter for real and store the outputs in the notebooks.
execute: $(STAMP)
	$(PY) scripts/execute_notebooks.py

clean:
	rm -rf _build
