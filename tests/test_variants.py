"""The generator variant registry: one table the stages, `cfdg check` and the reports read.

The stage resolves a name once and passes the variant object down; the config, the checkpoint, the
EDM fit and the sampler sit below the registry and never import it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from cfdg import report
from cfdg.config import from_mapping
from cfdg.diffusion.checkpoint import checkpoint_variant
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
from cfdg.diffusion.train import online_share
from cfdg.diffusion.variants import registry
from cfdg.diffusion.variants.base import GeneratorVariant
from cfdg.errors import CheckpointError, ConfigError
from tests.conftest import make_transitions


def test_every_variant_is_registered_under_its_name(tmp_path):
    assert list(registry.VARIANTS) == ["none", "synther", "joint", "edis", "cfdg"]  # reports order columns so
    for name, cls in registry.VARIANTS.items():
        assert cls.name == name and cls.display_name
        assert registry.get_variant(name).name == from_mapping(DiffusionConfig, {"variant": name}).variant
    with pytest.raises(ConfigError, match=r"diffusion.variant: must be one of \['none', 'synther'"):
        registry.get_variant("gan")
    # `cfdg check` (and every study cell) resolves the name through the registry, naming the file.
    from pipeline.sections import validate

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=r"^params.yaml:diffusion.variant: must be one of \['none'"):
        validate({**raw, "diffusion": {**(raw.get("diffusion") or {}), "variant": "gan"}})
    # A checkpoint of a variant this cfdg does not know is refused where the stage resolves it.
    cfg = from_mapping(DiffusionConfig, {"variant": "echo", "width": 16, "depth": 1, "train_steps": 2})
    model, _ = _Echo().fit(None, make_transitions(20), cfg, seed=0, progress=False)
    path = _Echo().save(model, tmp_path / "echo.pt")
    with pytest.raises(CheckpointError, match=r"echo.pt: variant 'echo' is not one this cfdg knows"):
        registry.fitted_variant(path)


def test_what_each_variant_trains_on_and_samples():
    offline, online = make_transitions(30, seed=1), make_transitions(10, seed=2)
    sampling = SamplingConfig(generated_online_fraction=0.8)
    for name, on, labels, share in (
        ("synther", {"offline": 0, "online": 10}, {2}, 1.0),
        ("joint", {"offline": 30, "online": 10}, {2}, 1.0),
        ("cfdg", {"offline": 30, "online": 10}, {0, 1}, 0.8),
    ):
        cfg = DiffusionConfig(variant=name, fit_online_fraction=0.5)
        data = registry.get_variant(name).training_set(offline, online)
        counts = data.counts
        assert counts == on and set(data.labels.tolist()) == labels, name
        assert data.drop_labels == (name == "cfdg")
        assert registry.get_variant(name).store_online_share(sampling) == share
        assert online_share(cfg, counts) == (None if name == "synther" else 0.5)


class _Echo(GeneratorVariant):
    """A test variant: online rows only, labelled (conditional without dropout)."""

    name: ClassVar[str] = "echo"
    display_name: ClassVar[str] = "Echo"
    trains_on = ("online",)
    keeps_labels: ClassVar[bool] = True


def test_a_new_variant_is_one_class_and_one_registry_line(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.VARIANTS, "echo", _Echo)
    cfg = from_mapping(DiffusionConfig, {"variant": "echo", "width": 16, "depth": 1, "train_steps": 2})
    model, metrics = registry.get_variant("echo").fit(None, make_transitions(20), cfg, seed=0, progress=False)
    assert metrics["n_train"] == {"offline": 0, "online": 20}
    path = _Echo().save(model, tmp_path / "echo.pt")
    assert checkpoint_variant(path) == "echo" and _Echo().load(path).cfg.variant == "echo"
    runs = [{"dataset": "d", "algo": "iql", "variant": v, "seed": 0, "final_score": 1.0} for v in ("echo", "cfdg")]
    assert "IQL CFDG | IQL Echo" in report.table1_markdown(runs)  # the registry's order, its display name
    # Another variant's loader refuses the checkpoint in one line.
    with pytest.raises(CheckpointError, match=r"echo.pt: holds a 'echo' model, not the 'cfdg' model") as e:
        registry.get_variant("cfdg").load(path)
    assert "\n" not in str(e.value)


def test_a_variant_fits_only_the_config_that_names_it():
    cfg = from_mapping(DiffusionConfig, {"variant": "cfdg", "width": 16, "depth": 1, "train_steps": 2})
    with pytest.raises(ConfigError, match=r"diffusion.variant is 'cfdg', but this is the 'synther' variant's fit"):
        registry.get_variant("synther").fit(None, make_transitions(20), cfg, seed=0, progress=False)


# --- the layering: below the registry, no module imports a variant ------------------------------

ROOT = Path(__file__).resolve().parents[1]
BELOW_THE_REGISTRY = (
    "cfdg.diffusion.config",
    "cfdg.diffusion.checkpoint",
    "cfdg.diffusion.train",
    "cfdg.diffusion.sample",
    "cfdg.diffusion.edm",
)


def _reachable(module: str) -> set[str]:
    """Project modules `module` can load: every cfdg import statement, in function bodies and
    TYPE_CHECKING blocks too (a function-local import once hid a loop), followed by reading source only."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.is_file():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        if name in seen or not path.is_file():
            continue  # `from cfdg.x import function`: not a module
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("cfdg")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cfdg"):
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return seen


def test_config_checkpoint_fit_and_sampler_never_import_the_variants():
    """An object travels, not its name: the stage resolves the variant and passes it down."""
    for module in BELOW_THE_REGISTRY:
        assert not [m for m in _reachable(module) if m.startswith("cfdg.diffusion.variants")], module
    # The check can fail: the variants themselves, and the stage that resolves one, reach the registry's modules.
    assert "cfdg.diffusion.variants.registry" in _reachable("cfdg.report")
    assert "cfdg.diffusion.variants.base" in _reachable("cfdg.diffusion.variants.edis")
