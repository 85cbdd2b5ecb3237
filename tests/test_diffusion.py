"""The diffusion model on a toy problem with a known answer, plus its exact contracts.

Toy: offline and online transitions drawn from two well-separated Gaussian mixtures. A short
fit must put online-labelled samples on the online mixture, null-label samples on both, and
more guidance must push samples further toward their class.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from cfdg.config import from_mapping
from cfdg.diffusion.checkpoint import check_dims, checkpoint_variant, load_diffusion, save_diffusion
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
from cfdg.diffusion.denoiser import LABEL_NULL, Denoiser
from cfdg.diffusion.edm import denoise, guided_denoise, karras_sigmas, loss_weight, preconditioning
from cfdg.diffusion.normaliser import Normaliser, from_vectors, to_vectors
from cfdg.diffusion.placeholder import save_no_model
from cfdg.diffusion.sample import label_pattern, sample, sample_to_store, write_empty_synthetic
from cfdg.diffusion.train import batch_indices, effective_train_steps, online_share, row_weights
from cfdg.diffusion.variants.registry import get_variant
from cfdg.errors import CheckpointError, ConfigError, StoreError
from cfdg.io import digest
from cfdg.quality import js_divergences
from cfdg.store import StoreMeta, Transitions, read_store
from tests.conftest import make_transitions

OBS, ACT = 2, 1
TOY = {"width": 128, "depth": 3, "train_steps": 2500}
SAMPLING = SamplingConfig(steps=32, batch=2000, guidance_w=1.0)


def fit(offline, online, cfg, *args, **kw):
    """What the fit stage does: the variant `cfg` names fits the model (cfdg.diffusion.train underneath)."""
    return get_variant(cfg.variant).fit(offline, online, cfg, *args, **kw)


def variant_of(model):
    """The variant object the sampler is handed (the stages resolve it once from the checkpoint)."""
    return get_variant(model.cfg.variant)


def mixture(n: int, centre: float, seed: int, terminal_rate: float) -> Transitions:
    """Two components at ±1 around `centre` in every dimension (s, a, r, s')."""
    rng = np.random.default_rng(seed)
    d = 2 * OBS + ACT + 1
    comp = rng.integers(0, 2, size=(n, 1)) * 2 - 1
    v = centre + comp * 1.0 + 0.3 * rng.normal(size=(n, d))
    return Transitions.from_arrays(
        {
            "observations": v[:, :OBS],
            "actions": v[:, OBS : OBS + ACT],
            "rewards": v[:, OBS + ACT],
            "next_observations": v[:, OBS + ACT + 1 :],
            "terminals": rng.random(n) < terminal_rate,
            "timeouts": np.zeros(n, bool),
        }
    )


OFF_CENTRE, ON_CENTRE = -4.0, 4.0


@pytest.fixture(scope="module")
def toy():
    offline = mixture(3000, OFF_CENTRE, seed=1, terminal_rate=0.0)
    online = mixture(1000, ON_CENTRE, seed=2, terminal_rate=0.3)
    cfg = from_mapping(DiffusionConfig, TOY, "diffusion")
    model, metrics = fit(offline, online, cfg, seed=0, progress=False)
    return offline, online, model, metrics


def centre_projection(t: Transitions) -> np.ndarray:
    """Mean over dimensions per row: ≈ −4 on the offline mixture, ≈ +4 on the online one."""
    v = to_vectors(t)[:, :-1]
    return v.mean(axis=1)


def test_fit_metrics(toy):
    _, _, model, metrics = toy
    assert metrics["n_train"] == {"offline": 3000, "online": 1000}
    assert len(metrics["loss_curve"]) == 20
    assert metrics["final_loss"] < 0.6 * metrics["loss_curve"][0]
    assert metrics["steps_per_s"] > 0 and model.step == 2500


def test_online_samples_match_online_mixture(toy):
    offline, online, model, _ = toy
    s = sample(model, variant_of(model), 2000, 1, 3, SAMPLING)
    assert (s.labels == 1).all()
    to_online = js_divergences(online, s, seed=0)["transition"]["classifier"]
    to_offline = js_divergences(offline, s, seed=0)["transition"]["classifier"]
    assert to_online < 0.25, to_online
    assert to_offline > 0.65, to_offline
    # Terminals are thresholded flags and keep the online rate (0.3), not the offline one (0).
    assert s.terminals.dtype == np.bool_ and not s.timeouts.any()
    assert 0.15 < s.terminals.mean() < 0.45


def test_offline_samples_match_offline_mixture(toy):
    _, _, model, _ = toy
    s = sample(model, variant_of(model), 1000, 0, 4, SAMPLING)
    proj = centre_projection(s)
    assert (np.abs(proj - OFF_CENTRE) < 2).mean() > 0.95
    assert s.terminals.mean() < 0.05


def test_unconditional_samples_cover_both(toy):
    _, _, model, _ = toy
    s = sample(model, variant_of(model), 2000, None, 5, SAMPLING)
    assert s.labels is None
    proj = centre_projection(s)
    near_off = (np.abs(proj - OFF_CENTRE) < 2).mean()
    near_on = (np.abs(proj - ON_CENTRE) < 2).mean()
    # Data proportions are 75% offline / 25% online.
    assert 0.6 < near_off < 0.9 and 0.1 < near_on < 0.4, (near_off, near_on)


def test_more_guidance_moves_samples_toward_their_class(toy):
    _, _, model, _ = toy

    def guided(label: int, w: float) -> float:
        return centre_projection(
            sample(model, variant_of(model), 1500, label, 6, dataclasses.replace(SAMPLING, guidance_w=w))
        ).mean()

    means = [guided(1, w) for w in (0.0, 2.0, 6.0)]
    # Guidance extrapolates away from the unconditional model, which sits on the offline side.
    assert means[0] < means[1] < means[2], means
    off = [guided(0, w) for w in (0.0, 6.0)]
    assert off[1] < off[0], off


def test_batched_guidance_equals_two_calls(toy):
    _, _, model, _ = toy
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, model.d_data, generator=gen)
    labels = torch.randint(0, 2, (64,), generator=gen)
    null = torch.full_like(labels, LABEL_NULL)
    sd = model.cfg.sigma_data
    for sigma in (0.01, 1.0, 40.0):
        s = torch.full((1, 1), sigma)
        with torch.no_grad():
            batched = guided_denoise(model.ema, x, s, labels, 1.5, sd)
            separate = 2.5 * denoise(model.ema, x, s, labels, sd) - 1.5 * denoise(model.ema, x, s, null, sd)
        torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-5)


def test_sampling_is_deterministic_for_a_seed(toy):
    _, _, model, _ = toy
    a = sample(model, variant_of(model), 300, 1, 11, SAMPLING)
    b = sample(model, variant_of(model), 300, 1, 11, SAMPLING)
    c = sample(model, variant_of(model), 300, 1, 12, SAMPLING)
    for name, arr in a.arrays().items():
        np.testing.assert_array_equal(arr, b.arrays()[name], err_msg=name)
    assert not np.array_equal(a.observations, c.observations)
    ode = dataclasses.replace(SAMPLING, stochastic=False)
    d = sample(model, variant_of(model), 300, 1, 11, ode)
    e = sample(model, variant_of(model), 300, 1, 11, ode)
    np.testing.assert_array_equal(d.observations, e.observations)
    assert not np.array_equal(a.observations, d.observations)


@pytest.mark.parametrize("sigma", [0.002, 0.3, 1.0, 80.0])
@pytest.mark.parametrize("sd", [1.0, 0.5])
def test_edm_preconditioning(sigma, sd):
    c_skip, c_out, c_in, c_noise = (float(c) for c in preconditioning(torch.tensor(sigma, dtype=torch.float64), sd))
    assert c_skip == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-12)
    assert c_out == pytest.approx(sigma * sd / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert c_noise == pytest.approx(math.log(sigma) / 4, rel=1e-12)
    # EDM's design goals: unit-variance network input and unit-variance training target F.
    assert c_in**2 * (sigma**2 + sd**2) == pytest.approx(1.0)
    assert ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2 == pytest.approx(1.0)
    assert float(loss_weight(torch.tensor(sigma), sd)) == pytest.approx(1 / c_out**2, rel=1e-5)


def test_denoise_applies_preconditioning():
    """With F ≡ b (zero output weights, bias b), D(x; σ) = c_skip·x + c_out·b exactly."""
    net = Denoiser(7, 16, 1)
    torch.nn.init.constant_(net.out.bias, 0.25)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    sigma, sd = 2.0, 0.5
    with torch.no_grad():
        d = denoise(net, x, torch.full((1, 1), sigma), torch.zeros(5, dtype=torch.long), sd)
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / math.sqrt(sigma**2 + sd**2)
    torch.testing.assert_close(d, c_skip * x + c_out * 0.25)


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu"])
def test_inference_fast_path_matches_training_path(activation):
    torch.manual_seed(0)
    net = Denoiser(9, 32, 3, activation=activation, layer_norm=activation != "gelu")
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x, c, labels = torch.randn(16, 9), torch.randn(16), torch.randint(0, 3, (16,))
    with torch.no_grad():
        plain = net(x, c, labels)
    with torch.inference_mode():
        fast = net(x, c, labels)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    assert plain.abs().max() > 0.01


def test_karras_sigmas():
    s = karras_sigmas(128, 0.002, 80.0, 7.0)
    assert len(s) == 129 and s[0] == pytest.approx(80.0) and s[127] == pytest.approx(0.002) and s[128] == 0.0
    assert all(a > b for a, b in itertools.pairwise(s))


def test_checkpoint_round_trip(toy, tmp_path):
    _, _, model, _ = toy
    path = save_diffusion(model, tmp_path / "diffusion.pt")
    loaded = load_diffusion(path, device="cpu")
    assert dataclasses.replace(loaded.cfg, device="auto") == model.cfg and loaded.step == model.step
    assert loaded.device == torch.device("cpu")
    assert loaded.optimizer_state is not None and loaded.optimizer_state["state"]
    a = sample(model, variant_of(model), 200, 1, 9, SAMPLING)
    b = sample(loaded, variant_of(loaded), 200, 1, 9, SAMPLING)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    check_dims(loaded, OBS, ACT)
    with pytest.raises(CheckpointError, match="obs/act dims 2/1, data has 11/3"):
        check_dims(loaded, 11, 3)


def test_checkpoint_holds_no_sampling_knob_and_refuses_old_versions(toy, tmp_path):
    _, _, model, _ = toy
    path = save_diffusion(model, tmp_path / "diffusion.pt")
    ckpt = torch.load(path, weights_only=True)
    fit_keys = {f.name for f in dataclasses.fields(DiffusionConfig)} - {"edis"}  # edis's own, in its checkpoints
    assert set(ckpt["config"]) == fit_keys
    sampling_only = {f.name for f in dataclasses.fields(SamplingConfig)} - {"precision", "threads"}
    assert not sampling_only & set(ckpt["config"]), sampling_only & set(ckpt["config"])
    assert checkpoint_variant(path) == "cfdg"
    # A version-1 checkpoint (sampling knobs inside) or version-2 (class_balance) gets one line that says what to do.
    ckpt["version"] = 1
    torch.save(ckpt, tmp_path / "old.pt")
    for read in (load_diffusion, checkpoint_variant):
        with pytest.raises(CheckpointError, match=r"old.pt: checkpoint version 1, this cfdg reads 4; refit") as e:
            read(tmp_path / "old.pt")
        assert "\n" not in str(e.value)
    none = save_no_model(tmp_path / "none.pt")
    assert checkpoint_variant(none) == "none"
    with pytest.raises(CheckpointError, match="variant 'none' fitted no model"):
        load_diffusion(none)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_diffusion(tmp_path / "missing.pt")
    garbled = tmp_path / "garbled.pt"
    garbled.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbled.pt: not a readable"):
        load_diffusion(garbled)
    other = tmp_path / "other.pt"
    torch.save({"weights": {}}, other)
    with pytest.raises(CheckpointError, match="not a cfdg diffusion checkpoint"):
        load_diffusion(other)


def test_sample_to_store(toy, tmp_path):
    _, _, model, _ = toy
    meta = StoreMeta(kind="synthetic", env_id="toy", source="test", round=1, seed=7)
    kw = {"meta": meta, "seed": 7, "sampling": dataclasses.replace(SAMPLING, n_rows=1000, batch=300), "progress": False}
    a = sample_to_store(model, variant_of(model), out_path=tmp_path / "a.zarr", **kw)
    b = sample_to_store(model, variant_of(model), out_path=tmp_path / "b.zarr", **kw)
    c = sample_to_store(model, variant_of(model), out_path=tmp_path / "c.zarr", **{**kw, "seed": 8})
    data, attrs = read_store(a)
    assert len(data) == 1000 and attrs["kind"] == "synthetic"
    assert attrs["counts"] == {"rows": 1000, "online": 800, "offline": 200}
    assert int(data.labels.sum()) == 800
    # Each label's rows are on its own mixture.
    proj = centre_projection(data)
    assert (proj[data.labels == 1] > 0).mean() > 0.95 and (proj[data.labels == 0] < 0).mean() > 0.95
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_empty_synthetic_store_for_variant_none(tmp_path):
    meta = StoreMeta(kind="synthetic", env_id="toy", source="none")
    data, attrs = read_store(write_empty_synthetic(tmp_path / "none.zarr", meta, OBS, ACT))
    assert len(data) == 0 and data.labels is not None and data.obs_dim == OBS and data.act_dim == ACT
    assert attrs["counts"] == {"rows": 0, "online": 0, "offline": 0}
    with pytest.raises(ConfigError, match="kind must be 'synthetic'"):
        write_empty_synthetic(tmp_path / "x.zarr", StoreMeta(kind="online", env_id="toy", source="x"), OBS, ACT)


def test_label_pattern_is_exact_in_every_prefix():
    labels = np.concatenate([label_pattern(s, 7, 0.8) for s in range(0, 70, 7)])
    np.testing.assert_array_equal(labels, label_pattern(0, 70, 0.8))
    assert labels[:10].sum() == 8 and labels.sum() == 56
    assert label_pattern(0, 9, 1.0).all() and not label_pattern(0, 9, 0.0).any()


def test_synther_variant_is_unconditional_on_online_data(tmp_path):
    offline = mixture(500, OFF_CENTRE, seed=1, terminal_rate=0.0)
    online = mixture(500, ON_CENTRE, seed=2, terminal_rate=0.0)
    cfg = from_mapping(DiffusionConfig, {**TOY, "variant": "synther", "train_steps": 300}, "diffusion")
    model, metrics = fit(offline, online, cfg, seed=0, progress=False)
    assert metrics["n_train"] == {"offline": 0, "online": 500}
    meta = StoreMeta(kind="synthetic", env_id="toy", source="test")
    sampling = dataclasses.replace(SAMPLING, n_rows=100)
    data, attrs = read_store(
        sample_to_store(model, variant_of(model), tmp_path / "s.zarr", meta, 0, sampling, progress=False)
    )
    assert attrs["counts"]["online"] == 100 and (data.labels == 1).all()
    with pytest.raises(ConfigError, match="label 0"):
        sample(model, variant_of(model), 10, 0, 0, SAMPLING)


def test_fit_is_deterministic_and_rejects_bad_input():
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 30}, "diffusion")
    a, _ = fit(offline, online, cfg, seed=3, progress=False)
    b, _ = fit(offline, online, cfg, seed=3, progress=False)
    c, _ = fit(offline, online, cfg, seed=4, progress=False)
    for (k, va), vb in zip(a.ema.state_dict().items(), b.ema.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.ema.proj.weight, c.ema.proj.weight)
    with pytest.raises(ConfigError, match="variant is 'none'"):
        fit(offline, online, from_mapping(DiffusionConfig, {"variant": "none"}), seed=0)
    with pytest.raises(ConfigError, match="needs offline data"):
        fit(None, online, cfg, seed=0)
    with pytest.raises(ConfigError, match="differ from online"):
        fit(make_transitions(50, obs_dim=4), online, cfg, seed=0)


def test_config_parsing():
    cfg = from_mapping(DiffusionConfig, {"width": 256, "precision": "bf16"}, "diffusion")
    assert cfg.width == 256 and cfg.depth == 6 and cfg.train_steps == 100_000
    sampling = from_mapping(SamplingConfig, {"guidance_w": 2.0}, "sampling")
    assert sampling.steps == 128 and sampling.s_churn == 80.0 and sampling.stochastic and sampling.buffer == "replace"
    # Sampling knobs are not fitting parameters: a fit config refuses them by name.
    with pytest.raises(ConfigError, match=r"diffusion: unknown key\(s\) \['guidance_w'\]"):
        from_mapping(DiffusionConfig, {"guidance_w": 2.0}, "diffusion")
    with pytest.raises(ConfigError, match=r"sampling.solver: must be one of \['heun'"):
        from_mapping(SamplingConfig, {"solver": "euler"}, "sampling")
    with pytest.raises(ConfigError, match=r"sampling.capacity: must be >= sampling.n_rows \(100\)"):
        from_mapping(SamplingConfig, {"buffer": "fifo", "n_rows": 100, "capacity": 50}, "sampling")
    with pytest.raises(ConfigError, match=r"sampling.buffer: must be one of \['replace', 'fifo'\]"):
        from_mapping(SamplingConfig, {"buffer": "ring"}, "sampling")
    with pytest.raises(ConfigError, match=r"diffusion.threads: must be >= 0"):
        from_mapping(DiffusionConfig, {"threads": -1}, "diffusion")
    with pytest.raises(ConfigError, match=r"diffusion: unknown key\(s\) \['widht'\]"):
        from_mapping(DiffusionConfig, {"widht": 3}, "diffusion")
    with pytest.raises(ConfigError, match="p_uncond"):
        from_mapping(DiffusionConfig, {"p_uncond": 1.5}, "diffusion")
    with pytest.raises(ConfigError, match="activation"):
        from_mapping(DiffusionConfig, {"activation": "tanh"}, "diffusion")


def test_normaliser_and_vectors():
    t = make_transitions(200, obs_dim=3, act_dim=2, seed=0)
    t = Transitions(**{**t.arrays(), "rewards": np.full(200, 5.0, np.float32)})  # a constant dimension
    v = to_vectors(t)
    norm = Normaliser.fit(v)
    z = norm.normalise(v)
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(z[:, -1], v[:, -1])  # terminal untouched
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(norm.denormalise(z), v, atol=1e-5)
    v2 = v.copy()
    v2[:, -1] = np.where(np.arange(200) % 2, 0.7, 0.2)
    back = from_vectors(v2, 3, 2)
    np.testing.assert_array_equal(back.terminals, np.arange(200) % 2 == 1)
    np.testing.assert_array_equal(back.observations, t.observations)


def test_joint_variant_is_one_unconditional_model_on_both_buffers(tmp_path):
    """`joint` (paper Table 3 "w/o guidance") models offline ∪ online with the null label only."""
    offline = mixture(1500, OFF_CENTRE, seed=1, terminal_rate=0.0)
    online = mixture(500, ON_CENTRE, seed=2, terminal_rate=0.0)
    cfg = from_mapping(DiffusionConfig, {**TOY, "variant": "joint", "train_steps": 1500}, "diffusion")
    model, metrics = fit(offline, online, cfg, seed=0, progress=False)
    assert metrics["n_train"] == {"offline": 1500, "online": 500}
    # Its class rows 0/1 were never trained: they keep their initial values.
    init = fit(offline, online, dataclasses.replace(cfg, train_steps=1), seed=0, progress=False)[0]
    torch.testing.assert_close(model.net.class_emb.weight[:2], init.net.class_emb.weight[:2])
    assert not torch.allclose(model.net.class_emb.weight[2], init.net.class_emb.weight[2])
    meta = StoreMeta(kind="synthetic", env_id="toy", source="test")
    sampling = dataclasses.replace(SAMPLING, n_rows=1000, guidance_w=4.0)  # w is ignored: no class to guide
    data, attrs = read_store(
        sample_to_store(model, variant_of(model), tmp_path / "j.zarr", meta, 0, sampling, progress=False)
    )
    # Labelled online (the agent's synthetic share), drawn from both mixtures in the data's 3:1 proportion.
    assert attrs["counts"] == {"rows": 1000, "online": 1000, "offline": 0}
    proj = centre_projection(data)
    near_off, near_on = (np.abs(proj - OFF_CENTRE) < 2).mean(), (np.abs(proj - ON_CENTRE) < 2).mean()
    assert 0.6 < near_off < 0.9 and 0.1 < near_on < 0.4, (near_off, near_on)
    unguided = sample(model, variant_of(model), 200, 1, 3, dataclasses.replace(SAMPLING, guidance_w=0.0))
    np.testing.assert_array_equal(
        sample(model, variant_of(model), 200, 1, 3, sampling).observations, unguided.observations
    )
    with pytest.raises(ConfigError, match="'joint' model is unconditional"):
        sample(model, variant_of(model), 10, 0, 0, SAMPLING)
    with pytest.raises(ConfigError, match="variant 'joint' needs offline data"):
        fit(None, online, cfg, seed=0, progress=False)


def test_fifo_buffer_keeps_the_newest_rows_up_to_capacity(toy, tmp_path):
    _, _, model, _ = toy
    meta = StoreMeta(kind="synthetic", env_id="toy", source="test")
    fifo = dataclasses.replace(SAMPLING, n_rows=300, batch=128, buffer="fifo", capacity=700)
    r1 = sample_to_store(model, variant_of(model), tmp_path / "1.zarr", meta, 1, fifo, prev=None, progress=False)
    r2 = sample_to_store(model, variant_of(model), tmp_path / "2.zarr", meta, 2, fifo, prev=r1, progress=False)
    r3 = sample_to_store(model, variant_of(model), tmp_path / "3.zarr", meta, 3, fifo, prev=r2, progress=False)
    d1, d2, d3 = (read_store(p)[0] for p in (r1, r2, r3))
    assert (len(d1), len(d2), len(d3)) == (300, 600, 700)
    # Round 2 = round 1's rows then round 2's samples; round 3 drops the oldest 200 rows.
    np.testing.assert_array_equal(d2.observations[:300], d1.observations)
    np.testing.assert_array_equal(d3.observations[:400], d2.observations[200:])
    replace = dataclasses.replace(fifo, buffer="replace")
    fresh3 = read_store(
        sample_to_store(model, variant_of(model), tmp_path / "x.zarr", meta, 3, replace, progress=False)
    )[0]
    np.testing.assert_array_equal(d3.observations[400:], fresh3.observations)
    np.testing.assert_array_equal(d3.labels[400:], fresh3.labels)
    assert read_store(r3)[1]["counts"]["online"] == int(d3.labels.sum())
    # `replace` ignores the previous store.
    replaced = sample_to_store(model, variant_of(model), tmp_path / "r.zarr", meta, 3, replace, prev=r2, progress=False)
    assert digest(replaced) == digest(tmp_path / "x.zarr")
    with pytest.raises(StoreError, match="previous synthetic buffer has kind 'offline'"):
        offline_store = tmp_path / "off.zarr"
        from cfdg.store import write_store

        write_store(offline_store, mixture(10, 0.0, 0, 0.0), StoreMeta(kind="offline", env_id="toy", source="t"))
        sample_to_store(
            model, variant_of(model), tmp_path / "bad.zarr", meta, 3, fifo, prev=offline_store, progress=False
        )
    assert not (tmp_path / "bad.zarr").exists()


# --- fitting options (issue 8 §3: each one a measured candidate) ----------------------------


@pytest.mark.parametrize("share", [0.5, 0.8])
def test_batches_draw_the_online_buffer_at_the_set_share(share):
    gen = torch.Generator().manual_seed(0)
    counts = {"offline": 9000, "online": 1000}
    uniform = torch.cat([batch_indices(counts, 256, None, gen, torch.device("cpu")) for _ in range(80)])
    shared = torch.cat([batch_indices(counts, 256, share, gen, torch.device("cpu")) for _ in range(80)])
    assert abs(float((uniform >= 9000).float().mean()) - 0.1) < 0.02
    assert abs(float((shared >= 9000).float().mean()) - share) < 0.02
    # Rows within a buffer stay uniform: every online row is reachable, indices stay in range.
    assert int(shared.min()) >= 0 and int(shared.max()) < 10_000
    assert len(torch.unique(shared[shared >= 9000])) > 900
    assert len(torch.unique(shared[shared < 9000])) > 3000


def test_online_share_applies_only_where_both_buffers_are_modelled():
    cfg = from_mapping(DiffusionConfig, {"fit_online_fraction": 0.8}, "diffusion")
    both, only = {"offline": 90, "online": 10}, {"offline": 0, "online": 50}
    assert online_share(cfg, both) == 0.8
    assert online_share(dataclasses.replace(cfg, variant="joint"), both) == 0.8
    assert online_share(dataclasses.replace(cfg, variant="synther"), only) is None
    assert online_share(dataclasses.replace(cfg, fit_online_fraction=None), both) is None


def test_normaliser_is_fitted_to_the_mixture_the_batches_draw():
    """Weights q/n_on and (1-q)/n_off give the statistics of a batch-share mixture, not of the stored rows."""
    rng = np.random.default_rng(0)
    off, on = rng.normal(0.0, 1.0, (9000, 4)), rng.normal(10.0, 1.0, (1000, 4))
    rows = np.concatenate([off, on]).astype(np.float32)
    counts = {"offline": 9000, "online": 1000}
    plain = Normaliser.fit(rows)
    mixed = Normaliser.fit(rows, row_weights(counts, 0.8))
    assert abs(float(plain.mean[0]) - 1.0) < 0.1  # 10% online
    assert abs(float(mixed.mean[0]) - 8.0) < 0.1  # 80% online
    # Equal weights reproduce the unweighted fit.
    np.testing.assert_allclose(Normaliser.fit(rows, np.ones(len(rows))).std, plain.std, rtol=1e-6)
    with pytest.raises(ConfigError, match="fit_online_fraction"):
        from_mapping(DiffusionConfig, {"fit_online_fraction": 1.0}, "diffusion")


def test_online_share_changes_what_the_fit_sees():
    """With 10x more offline rows, an online share of 1/2 must train the online class far more often."""
    offline, online = mixture(3000, OFF_CENTRE, seed=1, terminal_rate=0.0), mixture(300, ON_CENTRE, 2, 0.0)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 40}, "diffusion")
    a, _ = fit(offline, online, cfg, seed=0, progress=False)
    b, _ = fit(offline, online, dataclasses.replace(cfg, fit_online_fraction=0.5), seed=0, progress=False)
    assert not torch.equal(a.net.proj.weight, b.net.proj.weight)
    # The online class's embedding row gets gradient far more often with the share.
    init, _ = fit(offline, online, dataclasses.replace(cfg, train_steps=1), seed=0, progress=False)
    moved = [float((m.net.class_emb.weight[1] - init.net.class_emb.weight[1]).detach().norm()) for m in (a, b)]
    assert moved[1] > moved[0], moved


def test_film_conditioning_starts_as_input_conditioning_and_learns_to_use_it():
    torch.manual_seed(0)
    plain = Denoiser(9, 32, 3)
    film = Denoiser(9, 32, 3, conditioning="film")
    missing = film.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".film." in k for k in missing)
    torch.nn.init.normal_(plain.out.weight, std=0.1)
    film.out.weight.data.copy_(plain.out.weight)
    x, c, labels = torch.randn(16, 9), torch.randn(16), torch.randint(0, 3, (16,))
    with torch.no_grad():
        torch.testing.assert_close(film(x, c, labels), plain(x, c, labels))  # zero-initialised modulation
    cfg = from_mapping(DiffusionConfig, {**TOY, "conditioning": "film", "train_steps": 1500}, "diffusion")
    offline, online = mixture(3000, OFF_CENTRE, seed=1, terminal_rate=0.0), mixture(1000, ON_CENTRE, 2, 0.3)
    model, _ = fit(offline, online, cfg, seed=0, progress=False)
    assert all(float(block.film.weight.detach().abs().max()) > 1e-3 for block in model.net.blocks)
    proj_on = centre_projection(sample(model, variant_of(model), 1000, 1, 3, SAMPLING))
    proj_off = centre_projection(sample(model, variant_of(model), 1000, 0, 3, SAMPLING))
    assert (np.abs(proj_on - ON_CENTRE) < 2).mean() > 0.9 and (np.abs(proj_off - OFF_CENTRE) < 2).mean() > 0.9


@pytest.mark.parametrize("shared_noise", [True, False])
def test_film_fast_path_matches_training_path(shared_noise):
    torch.manual_seed(0)
    net = Denoiser(9, 32, 3, conditioning="film")
    for block in net.blocks:
        torch.nn.init.normal_(block.film.weight, std=0.3)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x, labels = torch.randn(16, 9), torch.randint(0, 3, (16,))
    c = torch.randn(1) if shared_noise else torch.randn(16)
    with torch.no_grad():
        plain = net(x, c, labels)
    with torch.inference_mode():
        fast = net(x, c, labels)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_ema_and_cosine_schedule_come_from_torch():
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 50}, "diffusion")
    no_avg, _ = fit(offline, online, dataclasses.replace(cfg, ema_decay=0.0), seed=0, progress=False)
    for (k, e), n in zip(no_avg.ema.state_dict().items(), no_avg.net.state_dict().values(), strict=True):
        assert torch.equal(e, n), k  # decay 0: the average is the last weights
    slow, _ = fit(offline, online, dataclasses.replace(cfg, ema_decay=0.99), seed=0, progress=False)
    start, _ = fit(offline, online, dataclasses.replace(cfg, train_steps=1), seed=0, progress=False)
    w_net, w_ema, w_0 = slow.net.proj.weight, slow.ema.proj.weight, start.net.proj.weight
    assert float((w_ema - w_0).norm()) < float((w_net - w_0).norm())  # the average lags behind
    # Cosine annealing ends at lr 0 after the last step; constant keeps lr.
    assert slow.optimizer_state["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    const, _ = fit(offline, online, dataclasses.replace(cfg, lr_schedule="constant"), seed=0, progress=False)
    assert const.optimizer_state["param_groups"][0]["lr"] == cfg.lr


def test_fit_steps_grow_with_the_data():
    cfg = from_mapping(DiffusionConfig, {"train_steps": 100, "steps_per_row": 0.5, "max_train_steps": 300})
    assert effective_train_steps(cfg, 10) == 100  # never fewer than train_steps
    assert effective_train_steps(cfg, 401) == 201  # ceil(0.5 * 401)
    assert effective_train_steps(cfg, 10_000) == 300  # capped
    assert effective_train_steps(dataclasses.replace(cfg, max_train_steps=0), 10_000) == 5000
    with pytest.raises(ConfigError, match=r"diffusion.max_train_steps: must be 0 \(no cap\) or >= train_steps"):
        from_mapping(DiffusionConfig, {"train_steps": 100, "max_train_steps": 50}, "diffusion")
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    small = from_mapping(DiffusionConfig, {"width": 16, "depth": 1, "train_steps": 5, "steps_per_row": 0.1})
    model, metrics = fit(offline, online, small, seed=0, progress=False)
    assert metrics["train_steps_effective"] == 40 == model.step  # ceil(0.1 * 400)


def test_warm_start_continues_from_the_previous_model():
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 30, "warm_start": True})
    prev, _ = fit(offline, online, cfg, seed=0, progress=False)
    tiny_lr = dataclasses.replace(cfg, lr=1e-9)
    warm, metrics = fit(offline, online, tiny_lr, seed=5, progress=False, init=prev)
    cold, _ = fit(offline, online, tiny_lr, seed=5, progress=False)
    assert metrics["warm_started"] and metrics["train_steps_effective"] == 30  # equal compute
    torch.testing.assert_close(warm.net.proj.weight, prev.net.proj.weight, rtol=0, atol=1e-6)
    assert not torch.allclose(cold.net.proj.weight, prev.net.proj.weight, atol=1e-3)
    with pytest.raises(ConfigError, match="diffusion.warm_start: the previous round's model has width 32, this fit 64"):
        fit(offline, online, dataclasses.replace(cfg, width=64), seed=0, progress=False, init=prev)


def test_bf16_training_with_the_new_pieces():
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    options = {"conditioning": "film", "fit_online_fraction": 0.8, "steps_per_row": 0.1, "precision": "bf16"}
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 20, **options})
    a, metrics = fit(offline, online, cfg, seed=0, progress=False)
    b, _ = fit(offline, online, cfg, seed=0, progress=False)
    assert np.isfinite(metrics["final_loss"]) and metrics["train_steps_effective"] == 40
    assert all(p.dtype == torch.float32 for p in a.net.parameters())  # fp32 master weights
    for (k, va), vb in zip(a.ema.state_dict().items(), b.ema.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    warm, _ = fit(offline, online, dataclasses.replace(cfg, warm_start=True), 1, False, init=a)
    s = sample(warm, variant_of(warm), 50, 1, 0, dataclasses.replace(SAMPLING, steps=4, precision="bf16"))
    assert np.isfinite(s.observations).all()


def test_film_model_checkpoint_round_trip(tmp_path):
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 20, "conditioning": "film"})
    model, _ = fit(offline, online, cfg, seed=0, progress=False)
    loaded = load_diffusion(save_diffusion(model, tmp_path / "film.pt"), device="cpu")
    assert loaded.cfg.conditioning == "film" and loaded.net.film
    few = dataclasses.replace(SAMPLING, steps=4)
    np.testing.assert_array_equal(
        sample(model, variant_of(model), 64, 1, 2, few).observations,
        sample(loaded, variant_of(loaded), 64, 1, 2, few).observations,
    )


def test_fit_trains_the_network_and_normaliser_it_is_given():
    """`net=` and `normaliser=` are how an experiment changes the fit (no patching): round k-1's network
    passed as `net` trains exactly as a warm start from it; a given normaliser is used as it is."""
    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 20})
    prev, _ = fit(offline, online, cfg, seed=0, progress=False)
    warm, _ = fit(offline, online, cfg, seed=5, progress=False, init=prev)
    given, _ = fit(offline, online, cfg, seed=5, progress=False, net=copy.deepcopy(prev.net))
    cold, _ = fit(offline, online, cfg, seed=5, progress=False)
    for (k, a), b in zip(warm.ema.state_dict().items(), given.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not torch.equal(given.ema.proj.weight, cold.ema.proj.weight)
    fixed = Normaliser.fit(to_vectors(online))
    model, _ = fit(offline, online, cfg, seed=0, progress=False, normaliser=fixed)
    assert model.normaliser is fixed and not np.allclose(prev.normaliser.mean, fixed.mean)


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(tmp_path):
    """`auto` reads the CPU's flags: AVX512-BF16 or AMX → bf16; a CPU that would emulate bf16 → fp32."""
    from cfdg.device import cpu_has_native_bf16, resolve_precision
    from cfdg.errors import ConfigError

    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\n"
    zen3, zen4, spr = (tmp_path / n for n in ("zen3", "zen4", "spr"))
    zen3.write_text(flags.format(""))
    zen4.write_text(flags.format("avx512_bf16"))
    spr.write_text(flags.format("amx_bf16 amx_tile"))
    assert [cpu_has_native_bf16(str(p)) for p in (zen3, zen4, spr)] == [False, True, True]
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_checkpoint_written_before_the_rename_still_loads(tmp_path):
    """A version-3 checkpoint (`batch_online_share`) loads as the same model with `fit_online_fraction`."""
    from cfdg.io import read_checkpoint

    offline, online = make_transitions(300, seed=1), make_transitions(100, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 5, "fit_online_fraction": 0.7})
    model, _ = fit(offline, online, cfg, seed=0, progress=False)
    ckpt = read_checkpoint(save_diffusion(model, tmp_path / "new.pt"), "diffusion")
    ckpt["version"] = 3
    ckpt["config"]["batch_online_share"] = ckpt["config"].pop("fit_online_fraction")
    torch.save(ckpt, tmp_path / "old.pt")
    old = load_diffusion(tmp_path / "old.pt", device="cpu")
    assert old.cfg.fit_online_fraction == 0.7 and torch.equal(old.ema.proj.weight, model.ema.proj.weight)
