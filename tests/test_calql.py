"""Cal-QL's pieces: Monte-Carlo returns, the calibrated CQL gap, the tanh-Gaussian policy, phases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from cfdg.agents.calql import TanhGaussianPolicy, cql_gap, episode_ends, mc_returns
from cfdg.agents.registry import agent_config, make_agent
from cfdg.errors import ConfigError
from cfdg.store import Transitions
from tests.conftest import make_transitions

CPU = torch.device("cpu")


def test_mc_returns_are_discounted_return_to_go_per_episode():
    r = np.array([1.0, 1.0, 1.0, 2.0, 2.0])
    term = np.array([False, False, True, False, False])
    ends = np.array([False, False, True, False, True])
    got = mc_returns(r, term, ends, 0.5)
    np.testing.assert_allclose(got, [1.75, 1.5, 1.0, 3.0, 2.0])
    # Sparse (CORL's is_sparse_reward): an episode that ends on the failure reward never reached the goal.
    r = np.array([-1.0, -1.0, -1.0, -1.0, 0.0])
    got = mc_returns(r, np.zeros(5, bool), np.array([False, False, True, False, True]), 0.9, sparse_fail=-1.0)
    np.testing.assert_allclose(got[:3], -10.0)
    np.testing.assert_allclose(got[3:], [-1.0, 0.0])  # reached: plain return-to-go


def test_episode_ends_follow_terminals_timeouts_and_broken_chains():
    obs = np.arange(7, dtype=np.float32)[:, None].repeat(2, 1)
    arrays = {
        "observations": obs[:6],
        "actions": np.zeros((6, 1)),
        "rewards": np.zeros(6),
        "next_observations": obs[1:7].copy(),
        "terminals": np.array([0, 1, 0, 0, 0, 0], bool),
        "timeouts": np.zeros(6, bool),
    }
    arrays["next_observations"][3] += 5.0  # s' of row 3 is not row 4's s: a new episode starts
    ends = episode_ends(Transitions.from_arrays(arrays))
    assert ends.tolist() == [False, True, False, True, False, True]


def test_calibration_lifts_only_the_policy_actions_to_the_bound():
    torch.manual_seed(0)
    h, b, n, a = 2, 8, 4, 3
    q_data, q_rand = torch.randn(h, b), torch.randn(h, b, n)
    q_curr, q_next = torch.randn(h, b, n) - 5.0, torch.randn(h, b, n) - 5.0
    lp_c, lp_n = torch.randn(b, n), torch.randn(b, n)
    plain = cql_gap(q_data, q_rand, q_curr, q_next, lp_c, lp_n, None, a)
    bound = torch.full((b,), 3.0)
    cal = cql_gap(q_data, q_rand, q_curr, q_next, lp_c, lp_n, bound, a)
    expected = torch.logsumexp(
        torch.cat([q_rand - a * math.log(0.5), 3.0 - lp_n.expand(h, b, n), 3.0 - lp_c.expand(h, b, n)], -1), -1
    )
    torch.testing.assert_close(cal, expected - q_data)
    assert (cal > plain).all()  # Q far below the reference value: calibration raises the pushed-down term
    low = cql_gap(q_data, q_rand, q_curr, q_next, lp_c, lp_n, torch.full((b,), -1e9), a)
    torch.testing.assert_close(low, plain)  # a bound below Q changes nothing


def test_tanh_gaussian_log_prob_matches_torch_distribution():
    torch.manual_seed(0)
    pi = TanhGaussianPolicy(4, 3, (16,), 1.0)
    obs, eps = torch.randn(32, 4), torch.randn(32, 3)
    _, logp = pi(obs, eps)
    mean, log_std = pi.dist(obs)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform(cache_size=1))
    u = mean + log_std.exp() * eps
    ref = dist.log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(logp, ref, atol=2e-3, rtol=1e-4)  # torch goes through atanh(tanh(u))
    det, _ = pi(obs)
    torch.testing.assert_close(det, torch.tanh(mean))


def agent(**kw):
    torch.manual_seed(0)
    cfg = agent_config({"algo": "calql", "hidden_dims": (32, 32), "batch_size": 64, **kw})
    return make_agent(cfg, 5, 3, 1.0, CPU)


def batch(data: Transitions, mc: np.ndarray | None, rows=slice(0, 64)):
    from cfdg.agents.replay import Batch

    t = data.take(np.arange(len(data))[rows])
    return Batch(
        torch.as_tensor(t.observations),
        torch.as_tensor(t.actions),
        torch.as_tensor(t.rewards),
        torch.as_tensor(t.next_observations),
        torch.as_tensor(t.terminals, dtype=torch.float32),
        counts={},
        **({"mc_returns": torch.as_tensor(mc[rows])} if mc is not None else {}),
    )


def test_offline_needs_mc_returns_online_does_not():
    data = make_transitions(300)
    a = agent()
    mc = a.offline_mc_returns(data)
    assert mc.shape == (300,) and np.isfinite(mc).all()
    with pytest.raises(ValueError, match="mc_returns"):
        a.update(batch(data, None))
    m = a.update(batch(data, mc))
    assert all(torch.isfinite(v) for v in m.values())
    a.start_online()
    assert not a.calibrated
    m = a.update(batch(data, None))
    assert float(m["bound_rate"]) == 0.0


def test_offline_steps_lower_q_on_random_actions_but_not_below_the_bound():
    """The conservative term pushes Q of out-of-data actions down; calibration keeps π's Q at the MC bound."""
    data = make_transitions(256)
    arrays = data.arrays()
    arrays["rewards"] = np.ones(256)
    data = Transitions.from_arrays(arrays)
    a = agent(cql_alpha=5.0, lr=1e-3, cql_policy_lr=1e-3)
    mc = a.offline_mc_returns(data)
    b = batch(data, mc, slice(0, 256))
    for _ in range(150):
        a.update(b)
    obs = a.norm(b.observations)
    rand = torch.rand(256, 3) * 2 - 1
    with torch.no_grad():
        q_data = a.critic.min(obs, b.actions).mean()
        q_rand = a.critic.min(obs, rand).mean()
    assert q_rand < q_data


def test_calql_config_validation():
    with pytest.raises(ConfigError, match="agent.cql_n_actions: must be >= 1"):
        agent_config({"algo": "calql", "cql_n_actions": 0}, "agent")
    with pytest.raises(ConfigError, match="agent.algo"):
        agent_config({"algo": "cql"}, "agent")
    cfg = agent_config({"algo": "calql", "cql_clip_diff_min": -200}, "agent")
    assert dataclasses.asdict(cfg)["cql_clip_diff_min"] == -200.0


def test_state_round_trip_and_another_algorithms_state_refused():
    import io

    from cfdg.errors import CheckpointError

    data = make_transitions(300)
    a = agent(cql_lagrange=True, cql_target_action_gap=0.8)
    mc = a.offline_mc_returns(data)
    for i in range(3):
        a.update(batch(data, mc, slice(64 * i, 64 * (i + 1))))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = agent(cql_lagrange=True, cql_target_action_gap=0.8)
    torch.manual_seed(99)  # b starts from other weights: everything must come from the state
    b.load_state_dict(torch.load(buf, weights_only=True))
    for x in (a, b):
        torch.manual_seed(7)
        x.update(batch(data, mc, slice(0, 64)))
    for name in a._modules:
        for p, q in zip(getattr(a, name).parameters(), getattr(b, name).parameters(), strict=True):
            assert torch.equal(p, q), name
    with pytest.raises(CheckpointError, match="calql"):
        b.load_state_dict(
            make_agent(agent_config({"algo": "iql", "hidden_dims": (32, 32)}), 5, 3, 1.0, CPU).state_dict()
        )


def test_calql_pretraining_beats_random_policy(tmp_path):
    """The PD-controller Hopper data of test_training; γ = 0.9 so Q settles within the test's 2000 steps.

    Measured (5 eval episodes): at 2000 steps seeds 0-3 all return ≈ 1000; at 1000 steps 2 of 3 seeds
    do; at CORL's γ = 0.99 none does within 1000 steps (the calibrated Q is still far below its bound)."""
    from cfdg.agents.checkpoint import load_checkpoint
    from cfdg.agents.config import PretrainConfig, RolloutConfig
    from cfdg.agents.train import pretrain, run_round
    from cfdg.errors import CheckpointError
    from cfdg.store import StoreMeta, write_store
    from tests.test_training import pd_action, random_returns, rollouts

    data = rollouts(3000, lambda o, rng: np.clip(pd_action(o) + rng.normal(0, 0.3, 3), -1, 1), seed=0)
    store = write_store(tmp_path / "h.zarr", data, StoreMeta(kind="offline", env_id="Hopper-v5", source="pd"))
    cfg = agent_config(
        {"algo": "calql", "hidden_dims": (64, 64), "batch_size": 64, "cql_policy_lr": 3e-4, "discount": 0.9}
    )
    m = pretrain(store, cfg, PretrainConfig(steps=2000, eval_every=0, eval_episodes=3), tmp_path / "c.pt", 0, False)
    rand = float(np.mean(random_returns(3, seed=10_000)))
    assert m["final_return"] > max(10 * rand, 500), (m["final_return"], rand)
    assert 0 < m["losses"][-1]["bound_rate"] < 1  # the calibration binds on part of the batch
    assert load_checkpoint(tmp_path / "c.pt", algo="calql")["algo"] == "calql"
    rollout = RolloutConfig(steps=10, warmup_steps=5, eval_episodes=1, chunk_rows=10)
    with pytest.raises(CheckpointError, match="algorithm 'calql', not 'iql'"):
        run_round(
            tmp_path / "c.pt", store, None, None, rollout, tmp_path / "x.pt", tmp_path / "x.zarr", 1, False, "iql"
        )
