# Two commands on a fresh machine: `make demo` and `make test` (both install what they need).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   ?= demo
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo lint test test-all test-gpu bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(VENV)/bin/draganything sample-data --out $(DEMO)/data --videos 192 --variants 192 --val-every 16 --frames 8 --world large
	$(VENV)/bin/draganything pipeline --workdir $(DEMO)/work --data-root $(DEMO)/data --dataset sample \
		--suites sample,user-study --select all --set evaluate.user_study_dir=$(abspath $(DEMO))/data/user_study
	@echo
	$(VENV)/bin/draganything report --workdir $(DEMO)/work --suite sample
	@echo
	$(VENV)/bin/draganything strip --workdir $(DEMO)/work --out $(DEMO)/control_strip.png
	@echo
	$(VENV)/bin/draganything status --workdir $(DEMO)/work
	@echo
	@echo "Demo finished. Results:"
	@echo "  dataset:     $(DEMO)/data (VIPSeg layout; ground truth in ground_truth/, user-study cases in user_study/)"
	@echo "  tables:      $(DEMO)/work/tables/<table>/part-*.parquet  (labels, entity_embeddings, checkpoints, train_log, samples,"
	@echo "               conditions, objmc, metrics, metrics_history, rejects; docs/tables.md)"
	@echo "  checkpoints: $(DEMO)/work/checkpoints/<id>/controlnet"
	@echo "  videos:      $(DEMO)/work/samples/<checkpoint>/<suite>/<item>/seed0.mp4"
	@echo "  strip:       $(DEMO)/control_strip.png (first frame and paths, then control on and control off)"
	@echo
	@echo "Open the dashboard (leaderboard, compare, training, vote, study results, drag) on this machine:"
	@echo "  $(VENV)/bin/draganything dashboard --workdir $(DEMO)/work --secrets $(DEMO)/secrets.toml"
	@echo "then go to http://127.0.0.1:8501 and, on the Vote page, sign in as the demo voter with the token:"
	@echo "  $$($(VENV)/bin/draganything voters add --secrets $(DEMO)/secrets.toml --name demo)"
	@echo "(a new random token on every run; $(DEMO)/secrets.toml keeps only its digest)"

lint: install
	$(PY) -m ruff check --no-cache .

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ""

# On a GPU machine, no install needed (torch, transformers, accelerate, safetensors, pytest, Pillow + the carried
# diffusers wheel in .whl/, see benchmarks/README.md): the gpu tests and the full-size rows, all into gpu_results.md.
GPU_SITE ?= /tmp/draganything-site
test-gpu:
	@$(PYTHON) -c "import pytest, PIL" 2>/dev/null || { echo "make test-gpu needs pytest and Pillow in $(PYTHON): $(PYTHON) -m pip install pytest pillow (or carry their wheels in .whl/ with diffusers)"; exit 2; }
	@if ls .whl/*.whl >/dev/null 2>&1; then $(PYTHON) -m pip install -q --no-index --no-deps --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=$(GPU_SITE):$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) benchmarks/gpu.py --out gpu_results.md

bench: install
	$(PY) benchmarks/labels.py

clean:
	rm -rf $(DEMO)
