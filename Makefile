# The two commands the README promises: `make demo` (the main job) and `make test`.
# Both create and reuse a local virtual environment in .venv; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORK ?= artifacts
ML1M ?= ../shared/data/ml-1m

.PHONY: install demo test lint format clean

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]' -e ./clients/python
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default. For now: synthetic data (always) and ML-1M (when the
# shared data is present) are prepared and summarized; later stages extend this target.
demo: install
	$(BIN)/logitrec data synth --out $(WORK)/synthetic-raw --force
	$(BIN)/logitrec data prepare $(WORK)/synthetic-raw --out $(WORK)/synthetic --force
	$(BIN)/logitrec data stats $(WORK)/synthetic
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
	rm -rf $(VENV) $(WORK) .pytest_cache .ruff_cache
