"""Batch mixing (paper 3.3): proportions, λ per APL batch, and exact base behaviour without synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfdg.agents.replay import BatchMixer, ReplayBuffer, Synthetic, sample_uniform, split_count
from cfdg.store import Transitions
from tests.conftest import make_transitions

CPU = torch.device("cpu")
# Each source's rewards carry a marker, so a batch's rows reveal where they came from.
MARK = {"online": 1.0, "offline": 2.0, "synthetic_online": 3.0, "synthetic_offline": 4.0}


def marked(n: int, mark: float, seed: int, labels: np.ndarray | None = None) -> Transitions:
    t = make_transitions(n, seed=seed)
    arrays = t.arrays()
    arrays["rewards"] = np.full(n, mark, np.float32)
    if labels is not None:
        arrays["labels"] = labels
    return Transitions.from_arrays(arrays)


@pytest.fixture
def buffers():
    online = ReplayBuffer.from_transitions(marked(500, MARK["online"], 1), CPU, capacity=1000)
    offline = ReplayBuffer.from_transitions(marked(2000, MARK["offline"], 2), CPU)
    labels = np.r_[np.ones(800, np.uint8), np.zeros(200, np.uint8)]
    syn = marked(1000, 0.0, 3, labels=labels)
    rewards = np.where(labels == 1, MARK["synthetic_online"], MARK["synthetic_offline"]).astype(np.float32)
    syn = Transitions.from_arrays({**syn.arrays(), "rewards": rewards})
    return online, offline, Synthetic.from_transitions(syn, CPU)


def check_counts_match_rows(batch) -> None:
    for name, mark in MARK.items():
        assert int((batch.rewards == mark).sum()) == batch.counts[name], name


def test_concat_draws_configured_proportions(buffers):
    online, offline, syn = buffers
    mixer = BatchMixer("concat", 256, online, offline, syn, synthetic_ratio=1 / 3, synthetic_online_fraction=0.8)
    gen = torch.Generator().manual_seed(0)
    totals = dict.fromkeys(MARK, 0)
    for _ in range(400):
        b = mixer.sample(gen)
        assert len(b) == 256 and b.lam is None
        check_counts_match_rows(b)
        for k, v in b.counts.items():
            totals[k] += v
    n = 400 * 256
    syn_total = totals["synthetic_online"] + totals["synthetic_offline"]
    assert syn_total / n == pytest.approx(1 / 3, abs=0.003)
    assert totals["synthetic_online"] / syn_total == pytest.approx(0.8, abs=0.01)
    assert totals["online"] / (totals["online"] + totals["offline"]) == pytest.approx(0.5, abs=0.005)
    # 1:1:1 online : offline : synthetic
    for k in ("online", "offline"):
        assert totals[k] / n == pytest.approx(1 / 3, abs=0.005)


@pytest.mark.parametrize("share", [0.8, 0.2])
def test_bernoulli_side_probability_lambda_and_synthetic_share(buffers, share):
    """APL's recipe: λ follows the real rows' side; the synthetic part is drawn at the 8:2 setting on
    both sides (paper 3.3 and 4.1), so the realised online-labelled share moves with the setting."""
    online, offline, syn = buffers
    mixer = BatchMixer(
        "bernoulli",
        128,
        online,
        offline,
        syn,
        synthetic_ratio=0.25,
        synthetic_online_fraction=share,
        p_online=0.3,
        online_threshold=100,
    )
    gen = torch.Generator().manual_seed(1)
    sides, syn_rows, syn_online = [], 0, {True: 0, False: 0}
    for _ in range(2000):
        b = mixer.sample(gen)
        check_counts_match_rows(b)
        online_side = b.counts["online"] > 0
        assert b.lam == (0.0 if online_side else 1.0)
        assert b.counts["offline" if online_side else "online"] == 0  # real rows from one side only
        assert b.counts["synthetic_online"] + b.counts["synthetic_offline"] == 32
        syn_rows += 32
        syn_online[online_side] += b.counts["synthetic_online"]
        sides.append(online_side)
    # Binomial(2000, 0.3): sd ≈ 0.0102; 4 sd tolerance.
    assert np.mean(sides) == pytest.approx(0.3, abs=0.041)
    # Binomial(64000, share) over rows: sd ≤ 0.002; the share holds on each side separately too.
    assert sum(syn_online.values()) / syn_rows == pytest.approx(share, abs=0.01)
    n_on = sum(sides)
    assert syn_online[True] / (32 * n_on) == pytest.approx(share, abs=0.02)
    assert syn_online[False] / (32 * (2000 - n_on)) == pytest.approx(share, abs=0.02)


def test_bernoulli_offline_only_until_online_buffer_passes_threshold(buffers):
    online, offline, _ = buffers
    mixer = BatchMixer("bernoulli", 64, online, offline, None, p_online=1.0, online_threshold=len(online))
    gen = torch.Generator().manual_seed(2)
    assert all(mixer.sample(gen).lam == 1.0 for _ in range(50))
    mixer.online_threshold = len(online) - 1
    assert all(mixer.sample(gen).lam == 0.0 for _ in range(50))


def _draw(mixer: BatchMixer, seed: int, n: int = 30) -> tuple[list, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batches = [mixer.sample(gen) for _ in range(n)]
    return batches, gen.get_state()


@pytest.mark.parametrize("paradigm", ["concat", "bernoulli"])
def test_no_or_empty_synthetic_store_is_exactly_the_base_algorithm(buffers, paradigm):
    online, offline, syn = buffers
    empty = Transitions.from_arrays(
        {k: v[:0] for k, v in marked(1, 0.0, 0, labels=np.ones(1, np.uint8)).arrays().items()}
    )
    assert Synthetic.from_transitions(empty, CPU) is None
    kw = {"p_online": 0.5, "online_threshold": 0}
    base, state = _draw(BatchMixer(paradigm, 96, online, offline, None, synthetic_ratio=1 / 3, **kw), 7)
    for other in (
        BatchMixer(paradigm, 96, online, offline, Synthetic.from_transitions(empty, CPU), synthetic_ratio=1 / 3, **kw),
        BatchMixer(paradigm, 96, online, offline, syn, synthetic_ratio=0.0, **kw),
    ):
        batches, other_state = _draw(other, 7)
        assert torch.equal(state, other_state)  # same random numbers consumed
        for a, b in zip(base, batches, strict=True):
            assert a.counts == b.counts and a.lam == b.lam
            for f in ("observations", "actions", "rewards", "next_observations", "dones"):
                assert torch.equal(getattr(a, f), getattr(b, f))
    with_syn, _ = _draw(BatchMixer(paradigm, 96, online, offline, syn, synthetic_ratio=1 / 3, **kw), 7)
    assert sum(b.counts["synthetic_online"] + b.counts["synthetic_offline"] for b in with_syn) > 0


def test_single_label_synthetic_store_uses_what_exists(buffers):
    online, offline, _ = buffers
    only_online = Synthetic.from_transitions(
        marked(100, MARK["synthetic_online"], 5, labels=np.ones(100, np.uint8)), CPU
    )
    assert only_online.offline is None
    mixer = BatchMixer("concat", 60, online, offline, only_online, synthetic_ratio=0.5)
    b = mixer.sample(torch.Generator().manual_seed(0))
    assert b.counts["synthetic_online"] == 30 and b.counts["synthetic_offline"] == 0
    check_counts_match_rows(b)


def test_ring_buffer_rebuilt_from_rows_equals_grown_buffer():
    data = make_transitions(137, seed=4)
    grown = ReplayBuffer(50, data.obs_dim, data.act_dim, CPU)
    for i in range(len(data)):
        grown.add(
            data.observations[i],
            data.actions[i],
            float(data.rewards[i]),
            data.next_observations[i],
            bool(data.terminals[i]),
        )
    rebuilt = ReplayBuffer(50, data.obs_dim, data.act_dim, CPU)
    rebuilt.extend(data.take(slice(0, 60)))
    rebuilt.extend(data.take(slice(60, None)))
    assert grown.total == rebuilt.total == 137 and len(grown) == 50
    for f in ("observations", "actions", "rewards", "next_observations", "dones"):
        assert torch.equal(getattr(grown, f), getattr(rebuilt, f))
    # FIFO: the oldest surviving row is row 87, held at slot 87 % 50.
    assert torch.equal(grown.observations[87 % 50], torch.from_numpy(data.observations[87]))
    assert set(grown.rewards.tolist()) == set(data.rewards[87:].tolist())


def test_split_count_rounding_is_unbiased_and_drawless_on_integers():
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    assert split_count(256, 0.5, gen) == 128 and split_count(256, 0.0, gen) == 0
    assert torch.equal(before, gen.get_state())
    draws = [split_count(256, 1 / 3, gen) for _ in range(3000)]
    assert set(draws) == {85, 86}
    assert np.mean(draws) == pytest.approx(256 / 3, abs=0.03)


def test_uniform_batches_cover_the_buffer():
    buf = ReplayBuffer.from_transitions(make_transitions(40, seed=1), CPU)
    b = sample_uniform(buf, 4000, torch.Generator().manual_seed(0), lam=1.0)
    assert b.counts["offline"] == 4000 and b.lam == 1.0
    assert len(torch.unique(b.rewards)) == 40
