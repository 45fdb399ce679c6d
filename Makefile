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

# The main job on the embedded default. For now: prepare synthetic data (and ML-1M when the
# shared data is present), train a small model on the synthetic data and evaluate it against
# the most-popular baseline. Later stages (export, serve, query) extend this target.
demo: install
	$(BIN)/logitrec data synth --out $(WORK)/synthetic-raw --force
	$(BIN)/logitrec data prepare $(WORK)/synthetic-raw --out $(WORK)/synthetic --force
	$(BIN)/logitrec data stats $(WORK)/synthetic
	$(BIN)/logitrec train --data $(WORK)/synthetic --out $(WORK)/checkpoints/synthetic --force \
		--epochs 10 --max-length 50 --hidden-size 32 --learning-rate 3e-3
	$(BIN)/logitrec evaluate --data $(WORK)/synthetic --checkpoint $(WORK)/checkpoints/synthetic --baselines
	@if [ -f $(ML1M)/ml-1m.txt ]; then \
		$(BIN)/logitrec data prepare $(ML1M) --out $(WORK)/ml-1m --force && \
		$(BIN)/logitrec data stats $(WORK)/ml-1m; \
	else echo "($(ML1M) not found: skipping ML-1M)"; fi

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
