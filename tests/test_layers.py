"""Imports only point down the layers named in `fcn_llm/__init__.py` (read from the source, so an import
inside a function counts too), and no module edits `sys.path`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer and the ones before it
LAYERS = [
    ("modeling_fcnllm", "processing"),
    ("datasets_scripts",),
    ("fcn_llm.questions", "fcn_llm.scoring", "fcn_llm.threads"),
    ("fcn_llm.training",),
    ("fcn_llm.evaluation",),
    ("fcn_llm.interpret",),
    ("fcn_llm.cli", "fcn_llm"),
    ("train", "recipe", "evaluate_zero_shot", "bench", "examples"),
]
OURS = {name.split(".")[0] for layer in LAYERS for name in layer}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (its longest listed prefix), None if it is not ours."""
    best, depth = None, -1
    for index, layer in enumerate(LAYERS):
        for name in layer:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file (module `module`), relative ones resolved."""
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            # `from fcn_llm import scoring` imports the submodule fcn_llm.scoring
            found += [(node.lineno, f"{target}.{alias.name}" if layer_of(f"{target}.{alias.name}") is not None
                       and layer_of(f"{target}.{alias.name}") != layer_of(target) else target) for alias in node.names]
    return found


def our_sources() -> list[Path]:
    files = [REPO / f"{name}.py" for name in ("train", "recipe", "evaluate_zero_shot")]
    for top in sorted(OURS - {"train", "recipe", "evaluate_zero_shot"}):
        files += sorted((REPO / top).rglob("*.py"))
    return [f for f in files if f.exists()]


def test_every_source_file_has_a_layer():
    missing = [str(f.relative_to(REPO)) for f in our_sources() if layer_of(module_name(f)) is None]
    assert not missing


def upward_imports(path: Path, module: str | None = None) -> list[str]:
    own = layer_of(module or module_name(path))
    return [f"line {line}: {name} (layer {layer_of(name)} > {own})" for line, name in imported_modules(path, module)
            if name.split(".")[0] in OURS and (layer_of(name) or 0) > own]


@pytest.mark.parametrize("path", our_sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down(path):
    upward = upward_imports(path)
    assert not upward, f"{path.relative_to(REPO)} imports up the layers: {upward}"


def test_no_sys_path_edits():
    edits = [f"{f.relative_to(REPO)}:{n}" for f in our_sources() for n, line in enumerate(f.read_text().splitlines(), 1)
             if "sys.path.insert" in line or "sys.path.append" in line]
    assert not edits


def test_guard_catches_an_upward_import(tmp_path):
    """The check itself: upward imports, absolute, relative and inside a function, are all reported."""
    source = tmp_path / "scoring.py"
    source.write_text("import numpy\nfrom processing import FCNProcessor\nfrom .training.collator import x\n"
                      "def f():\n    from fcn_llm.cli import train\n    from fcn_llm import evaluation\n")
    found = upward_imports(source, "fcn_llm.scoring")
    assert [line.split(":")[0] for line in found] == ["line 3", "line 5", "line 6"]
    assert "fcn_llm.training.collator" in found[0] and "fcn_llm.cli" in found[1] and "fcn_llm.evaluation" in found[2]
