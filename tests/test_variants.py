"""The generator variant registry: one table the config, the stages and the reports read."""

from __future__ import annotations

from typing import ClassVar

import pytest

from cfdg import report
from cfdg.config import from_mapping
from cfdg.diffusion.checkpoint import checkpoint_variant
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
from cfdg.diffusion.train import fit_diffusion, online_share, training_data
from cfdg.diffusion.variants import registry
from cfdg.diffusion.variants.base import GeneratorVariant
from cfdg.errors import CheckpointError, ConfigError
from tests.conftest import make_transitions


def test_every_variant_is_registered_under_its_name():
    assert list(registry.VARIANTS) == ["none", "synther", "joint", "edis", "cfdg"]  # reports order columns so
    for name, cls in registry.VARIANTS.items():
        assert cls.name == name and cls.display_name
        assert from_mapping(DiffusionConfig, {"variant": name}).variant == name
    with pytest.raises(ConfigError, match=r"diffusion.variant: must be one of \['none', 'synther'"):
        from_mapping(DiffusionConfig, {"variant": "gan"}, "diffusion")


def test_what_each_variant_trains_on_and_samples():
    offline, online = make_transitions(30, seed=1), make_transitions(10, seed=2)
    sampling = SamplingConfig(generated_online_fraction=0.8)
    for name, on, labels, share in (
        ("synther", {"offline": 0, "online": 10}, {2}, 1.0),
        ("joint", {"offline": 30, "online": 10}, {2}, 1.0),
        ("cfdg", {"offline": 30, "online": 10}, {0, 1}, 0.8),
    ):
        cfg = DiffusionConfig(variant=name, fit_online_fraction=0.5)
        _, got, counts = training_data(offline, online, cfg)
        assert counts == on and set(got.tolist()) == labels, name
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
    model, metrics = fit_diffusion(None, make_transitions(20), cfg, seed=0, progress=False)
    assert metrics["n_train"] == {"offline": 0, "online": 20}
    path = _Echo().save(model, tmp_path / "echo.pt")
    assert checkpoint_variant(path) == "echo" and _Echo().load(path).cfg.variant == "echo"
    runs = [{"dataset": "d", "algo": "iql", "variant": v, "seed": 0, "final_score": 1.0} for v in ("echo", "cfdg")]
    assert "IQL CFDG | IQL Echo" in report.table1_markdown(runs)  # the registry's order, its display name
    # Another variant's loader refuses the checkpoint in one line.
    with pytest.raises(CheckpointError, match=r"echo.pt: holds a 'echo' model, not the 'cfdg' model") as e:
        registry.get_variant("cfdg").load(path)
    assert "\n" not in str(e.value)
