# The two commands the README promises: `make demo` (the main job) and `make test`.
# Both create and reuse a local virtual environment in .venv; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real Triton server (PyPI nvidia-pytriton) needs numpy < 2 in its Python: its own venv.
TRITON_VENV := .venv-triton
WORK ?= artifacts
ML1M ?= ../shared/data/ml-1m

.PHONY: install demo test lint format clean

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build of 2.13.0 is on disk here; unpinned, pip would fetch CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]' -e ./clients/python
	touch $@

$(TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/pip install --quiet 'nvidia-pytriton==0.7.0' 'onnxruntime>=1.17' 'numpy<2'
	touch $@

install: $(VENV)/.installed $(TRITON_VENV)/.installed

# The main job on the embedded default (no Triton needed): data -> dataset -> trained model ->
# full-ranking evaluation -> ONNX export (parity-checked) -> gateway -> recommendations through
# the Python client. On ML-1M when ../shared/data/ml-1m is present, else on a synthetic log.
# A few minutes on 2 CPU cores; the model is small and briefly trained on the newest window per
# user (a third of the positions of the default --windows all; quality runs: benchmarks/).
# 20 epochs, validating 1,000 users: on ML-1M test NDCG@10 0.098 in 127 s of training, where
# 10 epochs stayed near popularity (0.025 vs 0.018).
demo: install
	@if [ -f $(ML1M)/ml-1m.txt ]; then \
		$(BIN)/logitrec data prepare $(ML1M) --out $(WORK)/demo-data --force; \
	else \
		echo "($(ML1M) not found: using a synthetic log)"; \
		$(BIN)/logitrec data synth --out $(WORK)/synthetic-raw --force && \
		$(BIN)/logitrec data prepare $(WORK)/synthetic-raw --out $(WORK)/demo-data --force; \
	fi
	$(BIN)/logitrec data stats $(WORK)/demo-data
	$(BIN)/logitrec train --data $(WORK)/demo-data --out $(WORK)/checkpoints/demo --force \
		--epochs 20 --valid-users 1000 --max-length 50 --hidden-size 32 --windows newest
	$(BIN)/logitrec evaluate --data $(WORK)/demo-data --checkpoint $(WORK)/checkpoints/demo --baselines
	$(BIN)/logitrec export --checkpoint $(WORK)/checkpoints/demo --repository $(WORK)/model_repository \
		--name demo --version 1 --force
	$(BIN)/python scripts/serve_and_query.py --repository $(WORK)/model_repository --users 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(WORK) .pytest_cache .ruff_cache
