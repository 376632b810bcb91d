"""Every module (`$(PY) -m name`) and script (`$(PY) file.py`) a Makefile target runs exists, so a moved
package cannot leave a target that fails only when a user types it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def makefile_commands() -> tuple[list[str], list[str]]:
    """(modules run with -m, scripts run by path) in the Makefile's `$(PY)` lines, pip's own calls left out."""
    text = (REPO / "Makefile").read_text()
    modules = [m for m in re.findall(r"\$\(PY\) -m ([\w.]+)", text) if m != "pip"]
    scripts = re.findall(r"\$\(PY\) ([\w/]+\.py)\b", text)
    return modules, scripts


def test_the_makefile_names_modules_and_scripts():
    modules, scripts = makefile_commands()
    assert {"fcn_llm.interpret", "bench.run", "pytest"} <= set(modules)
    assert "recipe.py" in scripts


def test_every_module_a_target_runs_is_importable():
    missing = [m for m in makefile_commands()[0] if importlib.util.find_spec(m) is None]
    assert not missing, f"Makefile targets run modules that do not exist: {missing}"


def test_every_script_a_target_runs_exists():
    missing = [s for s in makefile_commands()[1] if not (REPO / s).is_file()]
    assert not missing, f"Makefile targets run scripts that do not exist: {missing}"
