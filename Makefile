# Two commands on a fresh machine: `make demo` and `make test` (both install what they need).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   ?= demo
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(VENV)/bin/draganything sample-data --out $(DEMO)/data
	$(VENV)/bin/draganything labels --data-root $(DEMO)/data --split train --workdir $(DEMO)/work --dataset sample
	$(VENV)/bin/draganything labels --data-root $(DEMO)/data --split val --workdir $(DEMO)/work --dataset sample
	@echo
	@echo "Demo finished. Results:"
	@echo "  dataset:  $(DEMO)/data (VIPSeg layout, ground truth in ground_truth/)"
	@echo "  tables:   $(DEMO)/work/tables/<table>/*.parquet"
	@echo "  frames:   $(DEMO)/work/frames/"

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ""

bench: install
	$(PY) benchmarks/labels.py

clean:
	rm -rf $(DEMO)
