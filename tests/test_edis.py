"""EDIS (variant `edis`): energies that learn the online data, guidance that moves samples to it, its checkpoint.

Toy as in test_diffusion: offline and online transitions on two well-separated mixtures. The
diffusion model is fitted on both (as EDIS does), so unguided samples are mostly offline-like;
the energies must rank held-out online rows below held-out offline rows, and their guidance must
move samples towards the online side.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cfdg.config import from_mapping
from cfdg.diffusion.checkpoint import checkpoint_variant, load_diffusion, save_diffusion
from cfdg.diffusion.config import DiffusionConfig, EdisGuidance, SamplingConfig
from cfdg.diffusion.edis import ENERGY_VERSION, fit_energies, load_edis, previous_energies
from cfdg.diffusion.normaliser import to_vectors
from cfdg.diffusion.placeholder import save_no_model
from cfdg.diffusion.sample import sample
from cfdg.diffusion.train import check_warm_start
from cfdg.diffusion.variants.registry import get_variant
from cfdg.errors import CheckpointError, ConfigError
from cfdg.io import digest
from cfdg.quality import QualityConfig
from tests.test_diffusion import OFF_CENTRE, ON_CENTRE, mixture

EDIS = {"steps": 150, "batch": 64, "negatives": 4, "negative_steps": 8, "hidden": 64, "layers": 2}
TOY = {"variant": "edis", "width": 64, "depth": 2, "train_steps": 600, "edis": EDIS}


def toward_online(states: np.ndarray) -> np.ndarray:
    """A stand-in policy: the online mixture's action centre for every state."""
    return np.full((len(states), 1), ON_CENTRE, np.float32)


@pytest.fixture(scope="module")
def fitted():
    offline = mixture(1500, OFF_CENTRE, seed=1, terminal_rate=0.0)
    online = mixture(500, ON_CENTRE, seed=2, terminal_rate=0.0)
    cfg = from_mapping(DiffusionConfig, TOY, "diffusion")
    model, metrics = get_variant("edis").fit(offline, online, cfg, seed=0, progress=False)
    assert metrics["n_train"] == {"offline": 1500, "online": 500}  # EDIS's replay buffer: both
    guided, energy_metrics = fit_energies(model, online, cfg.edis, seed=1, policy=toward_online)
    return model, guided, energy_metrics


def online_side(states: np.ndarray) -> float:
    return float((states.mean(axis=1) > 0).mean())


def test_energies_rank_held_out_online_rows_below_the_rest(fitted):
    """Each energy on rows it never saw: online rows against rows whose part it steers is offline's."""
    _, guided, metrics = fitted
    for name in ("state", "policy", "transition"):
        assert metrics[f"energy_{name}_accuracy"] > 1 / (EDIS["negatives"] + 1)  # above chance in training
    online = to_vectors(mixture(300, ON_CENTRE, seed=5, terminal_rate=0.0))
    offline = to_vectors(mixture(300, OFF_CENTRE, seed=6, terminal_rate=0.0))
    obs, act = guided.obs_dim, guided.act_dim
    policy_rows = online.copy()
    policy_rows[:, obs : obs + act] = toward_online(online[:, :obs])
    rest = {
        "state": (online, offline),  # online states against offline ones
        "policy": (policy_rows, np.concatenate([online[:, :obs], offline[:, obs:]], axis=1)),  # π's action or not
        "transition": (online, np.concatenate([online[:, : obs + act], offline[:, obs + act :]], axis=1)),
    }
    gen = torch.Generator().manual_seed(0)
    for name, net in guided.energies.nets.items():
        pos, neg = (torch.from_numpy(guided.normaliser.normalise(v)) for v in rest[name])
        for s, least in ((0.05, 0.9), (1.0, 0.8)):
            level = torch.full((1, 1), s)
            with torch.no_grad():
                e_pos = net(pos + s * torch.randn(pos.shape, generator=gen), level)
                e_neg = net(neg + s * torch.randn(neg.shape, generator=gen), level)
            auc = float((e_pos[:, None] < e_neg[None, :]).float().mean())  # P(the online row has the lower energy)
            assert auc > least, (name, s, auc)


def test_guidance_moves_samples_toward_the_online_data(fitted):
    _, guided, _ = fitted
    off = SamplingConfig(steps=16, batch=500, edis=EdisGuidance(state=0.0, policy=0.0, transition=0.0))
    on = dataclasses.replace(off, edis=EdisGuidance(state=10.0, policy=1.0, transition=1.0))
    unguided = sample(guided, get_variant("edis"), 500, None, 3, off)
    steered = sample(guided, get_variant("edis"), 500, None, 3, on)
    assert online_side(unguided.observations) < 0.35  # the model is mostly offline-like (3:1 in its data)
    assert online_side(steered.observations) > online_side(unguided.observations) + 0.15
    assert (steered.labels == 1).all()  # EDIS's samples are used as online data
    assert get_variant("edis").store_online_share(on) == 1.0


def test_checkpoint_round_trip_and_other_variants_refuse_it(fitted, tmp_path):
    model, guided, _ = fitted
    edis = get_variant("edis")
    path = edis.save(guided, tmp_path / "edis.pt")
    assert checkpoint_variant(path) == "edis"
    loaded = edis.load(path, device="cpu")
    sampling = SamplingConfig(steps=4, batch=100)
    a, b = sample(guided, edis, 100, None, 9, sampling), sample(loaded, edis, 100, None, 9, sampling)
    np.testing.assert_array_equal(a.observations, b.observations)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["energies"]["version"] == ENERGY_VERSION and "edis" in ckpt["config"]

    # The other variants' paths refuse it, each in one line.
    errors = []
    for other in ("cfdg", "synther", "joint"):
        with pytest.raises(CheckpointError, match=rf"edis.pt: holds a 'edis' model, not the '{other}' model") as e:
            get_variant(other).load(path)
        errors.append(str(e.value))
    cfdg = save_diffusion(
        dataclasses.replace(model, cfg=dataclasses.replace(model.cfg, variant="cfdg")), tmp_path / "c.pt"
    )
    assert "edis" not in torch.load(cfdg, weights_only=True)["config"]  # other variants' checkpoints leave it out
    with pytest.raises(CheckpointError, match=r"c.pt: holds a 'cfdg' model, not the 'edis' model") as e:
        load_edis(cfdg)
    errors.append(str(e.value))
    cfdg_cfg = dataclasses.replace(model.cfg, variant="cfdg")
    with pytest.raises(ConfigError, match=r"previous round's model has variant 'edis', this fit 'cfdg'") as e:
        check_warm_start(cfdg_cfg, load_diffusion(path))
    errors.append(str(e.value))
    # Without its energies, or with another version of them, it is refused too.
    stripped = {k: v for k, v in ckpt.items() if k != "energies"}
    torch.save(stripped, tmp_path / "stripped.pt")
    with pytest.raises(CheckpointError, match=r"stripped.pt: an 'edis' checkpoint without its energy functions") as e:
        edis.load(tmp_path / "stripped.pt")
    errors.append(str(e.value))
    torch.save({**ckpt, "energies": {**ckpt["energies"], "version": 99}}, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match=r"v99.pt: energy functions version 99, this cfdg reads 1; refit"):
        edis.load(tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="without its energy functions"):
        sample(load_diffusion(path), edis, 10, None, 0, sampling)  # the plain loader's model cannot be EDIS-sampled
    assert all("\n" not in m for m in errors)


def test_energies_continue_from_the_previous_round(fitted, tmp_path):
    _, guided, _ = fitted
    cfg = guided.cfg.edis
    path = get_variant("edis").save(guided, tmp_path / "edis.pt")
    prev = previous_energies(path, cfg, guided.obs_dim, guided.act_dim)
    for k, v in guided.energies.state_dict().items():
        assert torch.equal(prev.state_dict()[k], v), k
    assert previous_energies(save_no_model(tmp_path / "none.pt"), cfg, 2, 1) is None  # round 0: afresh
    with pytest.raises(ConfigError, match=r"diffusion.edis.warm_start: the previous round's energies are") as e:
        previous_energies(path, dataclasses.replace(cfg, hidden=32), guided.obs_dim, guided.act_dim)
    assert "\n" not in str(e.value)


def test_energy_fit_is_deterministic_for_a_seed_and_can_cycle_a_small_pool(fitted):
    model, _, _ = fitted
    online = mixture(200, ON_CENTRE, seed=2, terminal_rate=0.0)
    small = dataclasses.replace(model.cfg.edis, steps=6, batch=16, negatives=2, negative_steps=2, hidden=16, layers=1)
    a, _ = fit_energies(model, online, small, seed=4, policy=toward_online)
    torch.manual_seed(123)  # torch's global RNG plays no part
    b, _ = fit_energies(model, online, small, seed=4, policy=toward_online)
    c, metrics = fit_energies(model, online, dataclasses.replace(small, pool=32), seed=5, policy=toward_online)
    for (k, va), vb in zip(a.energies.state_dict().items(), b.energies.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.energies.nets["state"].net[0].weight, c.energies.nets["state"].net[0].weight)
    assert metrics["energy_steps"] == 6
    with pytest.raises(ConfigError, match=r"diffusion.edis.pool: must be 0 or >= batch, got 8"):
        dataclasses.replace(small, pool=8)


def test_policy_energy_needs_a_policy_and_settings_are_checked(fitted):
    model, _, _ = fitted
    online = mixture(50, ON_CENTRE, seed=2, terminal_rate=0.0)
    with pytest.raises(ConfigError, match="the policy energy needs the round's agent"):
        fit_energies(model, online, model.cfg.edis, seed=0, policy=None)
    with pytest.raises(ConfigError, match=r"diffusion.edis.energies: must be a non-empty subset"):
        from_mapping(DiffusionConfig, {"variant": "edis", "edis": {"energies": ["reward"]}}, "diffusion")
    with pytest.raises(ConfigError, match=r"sampling.edis.state: must be >= 0"):
        from_mapping(SamplingConfig, {"edis": {"state": -1.0}}, "sampling")


@pytest.mark.slow
def test_edis_runs_through_fit_and_materialise_of_the_tiny_pipeline(tmp_path, tmp_path_factory):
    """Two rounds of the tiny pipeline's data with the real IQL agent's policy; the report's measures."""
    from pipeline_project import finished_project

    from stages import params
    from stages.fit import fit_stage
    from stages.materialise import materialise_stage

    finished = finished_project(tmp_path_factory)
    raw = params.read_params(finished / "params.yaml")
    tiny_edis = {"steps": 10, "batch": 32, "negatives": 4, "negative_steps": 4}
    cfg = from_mapping(DiffusionConfig, {**raw["diffusion"], "variant": "edis", "edis": tiny_edis}, "diffusion")
    sampling = from_mapping(SamplingConfig, raw["sampling"], "sampling")
    offline = finished / "artifacts" / "dataset" / "offline.zarr"
    rounds = finished / "artifacts" / "rounds"
    prev = rounds / "0" / "diffusion.pt"
    for k in (1, 2):
        out = tmp_path / str(k)
        agent, online = rounds / str(k) / "agent.pt", rounds / str(k) / "online.zarr"
        metrics = fit_stage(offline, online, cfg, 0, k, out / "diffusion.pt", False, prev, agent)
        assert metrics["energy_warm_started"] == (k == 2)  # round 1 starts from round 0's placeholder
        prov = json.loads((out / "fit.provenance.json").read_text())
        assert prov["inputs"]["agent"]["sha256"] == digest(agent) and prov["params"]["diffusion"]["variant"] == "edis"
        quality = materialise_stage(
            out / "diffusion.pt",
            offline,
            online,
            sampling,
            QualityConfig(max_rows=200, fidelity_rows=100),
            0,
            k,
            out / "synthetic.zarr",
            False,
        )
        assert quality["rows"]["generated"] == quality["rows"]["generated_online"] == sampling.n_rows
        assert set(quality["generated_vs_online"]) == {"state", "action", "transition"}
        assert "generated" in quality["fidelity"] and "ratio" in quality["memorisation"]
        prev = out / "diffusion.pt"
