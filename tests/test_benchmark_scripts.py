"""The benchmark scripts still import what they use (they run rarely, so a renamed function
would otherwise surface only at the next benchmark run)."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py")) + sorted((BENCHMARKS / "device").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_script_imports_what_it_uses(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/NAME.py` runs it
    # Loading runs the top level only, so the work must sit behind the __main__ guard.
    assert 'if __name__ == "__main__":' in script.read_text(), f"{script.name} runs on import"
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # an ImportError here is a renamed or moved name
