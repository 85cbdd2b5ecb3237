"""dvc.yaml's code deps are exactly the project modules each stage loads.

A stage whose imported module is missing from `deps` is not rerun when that module changes,
so DVC would call a stale output current. Each stage is imported in a fresh interpreter; the
imports written inside functions (loaded only when the code runs) are followed too, so the set
is what the stage can load when it runs, not just what its first line pulls in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from pipeline_project import ROOT

PACKAGES = ("cfdg", "stages", "pipeline")

# Run in a fresh interpreter: import the stage module, then every project module named by an
# import statement anywhere in a loaded project file (function bodies included), to a fixed point.
# Prints the loaded project files, relative to the root, minus those holding only a docstring.
LOADED = r"""
import ast, importlib, json, sys
from pathlib import Path

root, packages = Path.cwd().resolve(), {packages!r}
importlib.import_module({module!r})

def project_files():
    out = {{}}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and Path(f).is_absolute() and Path(f).resolve().is_relative_to(root):
            out[Path(f).resolve()] = m
    return out

def named(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{{node.module}}.{{a.name}}" for a in node.names)

def code_only_docstring(tree):
    body = [n for n in tree.body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)

seen, trees = set(), {{}}
while True:
    fresh = [f for f in project_files() if f not in seen]
    if not fresh:
        break
    for f in fresh:
        seen.add(f)
        trees[f] = ast.parse(f.read_text())
        for name in named(trees[f]):
            if name.split(".")[0] in packages:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass  # `from pkg import function`: not a module
print(json.dumps(sorted(f.relative_to(root).as_posix() for f in seen if not code_only_docstring(trees[f]))))
"""


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


def _loaded(module: str) -> list[str]:
    script = LOADED.format(packages=PACKAGES, module=module)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_list_the_modules_it_loads(name: str):
    body = _body(_stages()[name])
    module = body["cmd"].split()[2]  # python -m stages.<name> ...
    code_deps = [d for d in body["deps"] if d.split("/")[0] in PACKAGES]
    loaded = _loaded(module)
    assert f"{module.replace('.', '/')}.py" in loaded
    missing = [path for path in loaded if not any(_covers(dep, path) for dep in code_deps)]
    assert not missing, f"stage {name}: dvc.yaml deps lack modules it loads: {missing}"
    stale = [dep for dep in code_deps if not any(_covers(dep, path) for path in loaded)]
    assert not stale, f"stage {name}: dvc.yaml deps name code it never loads: {stale}"


def test_a_missing_dep_is_caught():
    """The check itself: a stage's modules minus one are reported as missing."""
    loaded = _loaded("stages.fit")
    deps = [p for p in loaded if p != "cfdg/store.py"]
    assert "cfdg/store.py" in loaded
    assert [p for p in loaded if not any(_covers(d, p) for d in deps)] == ["cfdg/store.py"]


def test_agents_and_diffusion_never_import_each_other():
    """They meet only in the stores the stages pass between them (ARCHITECTURE.md)."""
    for module in ("cfdg.agents.train", "cfdg.agents.replay"):
        assert not [p for p in _loaded(module) if p.startswith("cfdg/diffusion/")], module
    for module in ("cfdg.diffusion.train", "cfdg.diffusion.sample"):
        assert not [p for p in _loaded(module) if p.startswith("cfdg/agents/")], module
