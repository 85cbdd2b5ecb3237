"""Agents: PEX's choice rule, APL's λ-switched actor loss, IQL's losses, the fused twin critic, state round trips."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from torch import nn

from cfdg.agents.apl import APLCQL, APLTD3BC, actor_loss
from cfdg.agents.calql import sample_actions
from cfdg.agents.iql import expectile_loss
from cfdg.agents.networks import TwinQ
from cfdg.agents.optim import soft_update
from cfdg.agents.pex import choice_probs, choose
from cfdg.agents.registry import agent_config, make_agent
from cfdg.agents.replay import ReplayBuffer, sample_uniform
from cfdg.config import from_mapping
from cfdg.errors import CheckpointError, ConfigError
from tests.conftest import make_transitions

CPU = torch.device("cpu")
SMALL = {"hidden_dims": (32, 32), "batch_size": 64}


def agent(algo: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return make_agent(agent_config({**SMALL, **kw, "algo": algo}), 5, 3, 1.0, CPU)


def batches(n: int, lam=None, seed: int = 0):
    buf = ReplayBuffer.from_transitions(make_transitions(500, seed=seed), CPU)
    gen = torch.Generator().manual_seed(seed)
    return [sample_uniform(buf, 64, gen, lam=lam) for _ in range(n)]


# --- PEX -------------------------------------------------------------------------------------


def test_pex_choice_probabilities_are_softmax_of_scaled_q():
    q = torch.tensor([[1.0, 1.1], [0.0, -0.3], [5.0, 5.0]])
    p = choice_probs(q, 10.0)
    expected = np.exp(10 * q.numpy()) / np.exp(10 * q.numpy()).sum(-1, keepdims=True)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-6)
    assert p[0, 1] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-6)


def test_pex_choose_samples_with_those_probabilities_and_greedy_takes_argmax():
    q = torch.tensor([0.2, 0.25]).expand(20000, 2)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    idx = choose(q, 10.0, u)
    p_new = float(choice_probs(q[0], 10.0)[1])  # ≈ 0.6225
    assert idx.float().mean().item() == pytest.approx(p_new, abs=0.015)  # sd ≈ 0.0034
    assert torch.equal(
        choose(q, 10.0, u, greedy=torch.ones(20000, dtype=torch.bool)), torch.ones(20000, dtype=torch.long)
    )
    # inv_temperature 0: uniform choice
    assert choose(q, 0.0, u).float().mean().item() == pytest.approx(0.5, abs=0.015)


def test_pex_online_freezes_offline_policy_and_trains_a_new_one():
    a = agent("pex")
    for b in batches(3):
        a.update(b)
    offline_weights = [p.detach().clone() for p in a.actor.parameters()]
    a.start_online()
    assert all(not p.requires_grad for p in a.offline_actor.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(a.actor.parameters(), offline_weights, strict=True))
    new_before = [p.detach().clone() for p in a.actor.parameters()]
    for b in batches(5, seed=1):
        a.update(b)
    assert all(torch.equal(p, q) for p, q in zip(a.offline_actor.parameters(), offline_weights, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.actor.parameters(), new_before, strict=True))
    gen = torch.Generator().manual_seed(0)
    for mode in ("explore", "eval"):
        act = a.act(np.zeros(5, np.float32), mode, gen)
        assert act.shape == (3,) and np.all(np.abs(act) <= 1.0)


def test_pex_act_picks_candidate_with_much_higher_q():
    """A critic that prefers actions near +0.9 makes PEX choose the new policy's action when that is near it."""
    a = agent("pex")
    a.start_online()
    with torch.no_grad():
        for layer in a.actor.net:  # new policy: mean tanh(3) ≈ 0.995 everywhere
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.fill_(3.0)
        a.actor.log_std.fill_(-10.0)
        for layer in a.offline_actor.net:  # offline policy: mean tanh(-3)
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.fill_(-3.0)

    class SumCritic(nn.Module):
        def forward(self, obs, act):
            return act.sum(-1).expand(2, -1)

        def min(self, obs, act):
            return self(obs, act).min(0).values

    a.critic = SumCritic()
    gen = torch.Generator().manual_seed(0)
    picks = [a.act(np.zeros(5, np.float32), "explore", gen)[0] for _ in range(50)]
    assert all(p > 0.9 for p in picks)  # softmax(10·(~3 − ~−3)) ≈ 1 for the new policy


def constant_mean_(policy, value: float) -> None:
    """A GaussianPolicy whose mean is `value` in every state: zero weights, last bias atanh(value)."""
    linears = [m for m in policy.net if isinstance(m, nn.Linear)]
    for layer in linears:
        layer.weight.zero_()
        layer.bias.zero_()
    linears[-1].bias.fill_(float(np.arctanh(value)))


def sum_of_actions_critic_(critic: TwinQ) -> None:
    """Both heads of a real TwinQ set to Q(s, a) = Σ a (a first unit that carries Σa + 10 through the ReLUs)."""
    first, *rest = critic.layers
    first.weight.zero_()
    first.bias.zero_()
    first.weight[:, 5:, 0] = 1.0  # the action inputs (obs_dim 5)
    first.bias[:, :, 0] = 10.0
    for layer in rest:
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[:, 0, 0] = 1.0
    critic.head.weight.zero_()
    critic.head.weight[:, 0, 0] = 1.0
    critic.head.bias.fill_(-10.0)


@torch.no_grad()
def test_pex_awr_targets_are_the_expanded_policys_sampled_choices():
    """PEX's policy_update (pex/algorithms/pex.py): the new policy regresses on the action the expanded
    policy picks per state: the offline policy's mean, or a *sample* of the new policy, picked with
    softmax(inv_temperature · Q). Known policies (offline mean +0.5, new N(−0.5, 0.1²)) and a critic
    Q = Σa make the outcome exact: P(new) = E[σ(0.2·(Σa_new − 1.5))] ≈ 0.354. Regressing on the new
    policy's mean, or on uniform random actions, fails here."""
    a = agent("pex", inv_temperature=0.2)
    a.start_online()
    constant_mean_(a.offline_actor, 0.5)
    constant_mean_(a.actor, -0.5)
    a.actor.log_std.fill_(float(np.log(0.1)))
    sum_of_actions_critic_(a.critic)
    sum_of_actions_critic_(a.target_critic)
    n = 4000
    obs = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    v = torch.randn(n)
    chosen, adv = a.awr_targets(obs, torch.zeros(n, 3), torch.zeros(n), v)

    offline = torch.isclose(chosen, torch.full_like(chosen, 0.5), atol=1e-6).all(-1)
    new = chosen[~offline]
    z = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(2))
    p_new = torch.sigmoid(0.2 * ((-0.5 + 0.1 * z).sum(-1) - 1.5)).mean().item()
    assert (~offline).float().mean().item() == pytest.approx(p_new, abs=0.03)  # sd ≈ 0.008
    assert new.mean().item() == pytest.approx(-0.5, abs=0.01)  # the new policy's samples ...
    assert new.std().item() == pytest.approx(0.1, abs=0.01)  # ... not its mean
    torch.testing.assert_close(adv, chosen.sum(-1) - v)  # Q_target(s, chosen) − V(s)


def test_pex_update_regresses_the_new_policy_on_awr_targets():
    """`update` trains the new policy by AWR on `awr_targets`' actions and advantages (the same random
    draws), not on the batch's own actions: its actor gradient is that loss's gradient."""
    a = agent("pex", iql_beta=10.0)
    a.start_online()
    batch = batches(1, seed=7)[0]
    torch.manual_seed(5)
    a.update(batch)
    got = [p.grad.clone() for p in a.actor.parameters()]

    b = agent("pex", iql_beta=10.0)
    b.start_online()
    obs = b.norm(batch.observations)
    with torch.no_grad():
        v = b.vf(obs)
        adv = b.target_critic.min(obs, batch.actions) - v
    torch.manual_seed(5)
    act, awr_adv = b.awr_targets(obs, batch.actions, adv, v)
    weights = torch.exp(10.0 * awr_adv).clamp(max=100.0)
    loss = (weights * -b.actor.log_prob(obs, act)).mean()
    want = torch.autograd.grad(loss, list(b.actor.parameters()))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    plain = (torch.exp(10.0 * adv).clamp(max=100.0) * -b.actor.log_prob(obs, batch.actions)).mean()
    plain_grads = torch.autograd.grad(plain, list(b.actor.parameters()))
    assert any(not torch.allclose(g, w) for g, w in zip(got, plain_grads, strict=True))


# --- APL -------------------------------------------------------------------------------------


def test_apl_actor_loss_is_q_normalised_on_both_sides_bc_only_offline():
    """APL0 (td3_bc_gc.py): −(α / mean|Q|)·mean Q on every batch; λ switches only the BC term."""
    pi = torch.tensor([[0.1, 0.2], [0.3, -0.1], [0.0, 0.5]], requires_grad=True)
    c = torch.tensor([2.0, -1.0])
    q = pi @ c + torch.tensor([3.0, -5.0, 4.0])  # a critic linear in the action
    data_actions = torch.full((3, 2), 0.5)
    lam = 2.5 / q.abs().mean().item()  # α / mean|Q|
    online, bc_on = actor_loss(q, pi, data_actions, 0.0, 2.5)
    assert online.item() == pytest.approx(-lam * q.mean().item(), rel=1e-6) and bc_on.item() == 0.0
    grad_on = torch.autograd.grad(online, pi, retain_graph=True)[0]
    torch.testing.assert_close(grad_on, (-lam * c / 3).expand(3, 2))  # no pull towards data actions
    offline, bc_off = actor_loss(q, pi, data_actions, 1.0, 2.5)
    assert bc_off.item() == pytest.approx(((pi.detach() - 0.5) ** 2).mean().item())
    assert offline.item() == pytest.approx(-lam * q.mean().item() + bc_off.item(), rel=1e-6)
    grad_off = torch.autograd.grad(offline, pi)[0]
    torch.testing.assert_close(grad_off, -lam * c / 3 + 2 * (pi.detach() - 0.5) / 6)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_apl_actor_gradient_does_not_grow_with_the_scale_of_q(lam):
    """Q in the hundreds must not give online actor gradients 100x the offline ones."""
    pi = torch.tensor([[0.1, 0.2], [0.3, -0.1], [0.0, 0.5]], requires_grad=True)
    c = torch.tensor([2.0, -1.0])
    grads = []
    for scale in (1.0, 300.0):
        q = scale * (pi @ c + torch.tensor([3.0, 5.0, 4.0]))
        loss, _ = actor_loss(q, pi, torch.zeros(3, 2), lam, 2.5)
        grads.append(torch.autograd.grad(loss, pi)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_apl_update_uses_batch_lambda():
    a = agent("apl", policy_delay=1)
    on = a.update(batches(1, lam=0.0)[0])
    off = a.update(batches(1, lam=1.0, seed=1)[0])
    assert on["bc_loss"].item() == 0.0
    assert off["bc_loss"].item() > 0.0


def test_apl_engine_picks_the_form_and_checks_its_name():
    """`agent.apl_engine`: td3bc (APL0 td3_bc_gc.py) or cql (APL0 GCQL.py: 5 Q heads, rlkit policy)."""
    assert type(agent("apl")) is APLTD3BC  # the default: what the CPU studies ran
    cql = agent("apl", apl_engine="cql", log_std_min=-5.0)
    assert type(cql) is APLCQL and cql.algo == "apl" and cql.paradigm == "bernoulli"
    assert cql.critic(torch.zeros(7, 5), torch.zeros(7, 3)).shape == (5, 7)
    assert (cql.actor.log_std_min, cql.actor.log_std_max) == (-5.0, 2.0)
    assert not hasattr(cql.actor, "log_std_offset")  # rlkit's policy: no learnt affine on the log-std
    with pytest.raises(ConfigError, match="agent.apl_engine"):
        agent_config({"algo": "apl", "apl_engine": "sac"}, "agent")
    with pytest.raises(ConfigError, match="agent.apl_critics"):
        agent_config({"apl_critics": 1}, "agent")


def gcql_critic_grads(a, batch, lam: float, cql_alpha: float) -> list[torch.Tensor]:
    """The critic's gradient of one GCQL.py step, written out from APL0's formulas with the agent's draws."""
    obs, next_obs = batch.observations, batch.next_observations
    sample_actions(a.actor, obs)  # the actor's sample (the same random draws as update)
    next_act, _ = sample_actions(a.actor, next_obs)
    heads = torch.randperm(5)[:2]
    with torch.no_grad():
        target = batch.rewards + 0.99 * (1 - batch.dones) * a.target_critic(next_obs, next_act)[heads].min(0).values
    q_data = a.critic(obs, batch.actions)
    loss = (q_data - target).pow(2).mean(dim=1).sum()  # qf_criterion per head
    if lam:
        with torch.no_grad():
            rand = torch.rand((len(obs), 10, 3)) * 2 - 1
            curr, logp_curr = sample_actions(a.actor, obs, 10)
            nxt, logp_next = sample_actions(a.actor, next_obs, 10)

        def q_at(acts):  # [heads, B, 10]
            return a.critic(obs.repeat_interleave(10, 0), acts.reshape(-1, 3)).view(5, len(obs), 10)

        random_density = 3 * np.log(0.5)
        cat = torch.cat([q_at(rand) - random_density, q_at(nxt) - logp_next, q_at(curr) - logp_curr], dim=-1)
        min_q = torch.logsumexp(cat, dim=-1).mean(dim=1) - q_data.mean(dim=1)  # GCQL min_qfi_loss / min_q_weight
        loss = loss + cql_alpha * min_q.sum()
    return list(torch.autograd.grad(loss, list(a.critic.parameters())))


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_apl_cql_critic_step_is_gcqls(lam):
    """Eq. 2-3 as GCQL.py runs them: λ = 1 adds cql_alpha·(logsumexp − Q(s, a)) to each head's TD
    loss, λ = 0 (online batches) is the TD loss alone. The critic's gradient in `update` equals
    the one written out from APL0's formulas, for both λ."""
    batch = dataclasses.replace(batches(1, seed=3)[0], lam=lam)
    a = agent("apl", apl_engine="cql", apl_critics=5, cql_alpha=5.0)
    torch.manual_seed(11)
    metrics = a.update(batch)
    got = [p.grad.clone() for p in a.critic.parameters()]
    assert (metrics["cql_gap"].item() > 0) is bool(lam)

    fresh = agent("apl", apl_engine="cql", apl_critics=5, cql_alpha=5.0)
    torch.manual_seed(11)
    want = gcql_critic_grads(fresh, batch, lam, 5.0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    if lam:  # the conservative term is really in there: the TD-only gradient differs
        torch.manual_seed(11)
        td_only = gcql_critic_grads(agent("apl", apl_engine="cql", cql_alpha=5.0), batch, 0.0, 5.0)
        assert any(not torch.allclose(g, t, rtol=1e-3) for g, t in zip(got, td_only, strict=True))


def test_apl_cql_offline_updates_make_q_conservative():
    """The behaviour eq. 2 is there for: trained on λ = 1 batches of a narrow behaviour policy
    (actions near +0.6), Q of other actions falls below Q of the data's actions; on λ = 0 batches
    (the same data as online rows) it does not."""
    data = make_transitions(500, seed=4)
    rng = np.random.default_rng(4)
    data = dataclasses.replace(data, actions=np.clip(0.6 + 0.05 * rng.normal(size=(500, 3)), -1, 1).astype(np.float32))
    buf = ReplayBuffer.from_transitions(data, CPU)
    obs = torch.as_tensor(data.observations[:200])
    gaps = {}
    for lam in (0.0, 1.0):
        a = agent("apl", apl_engine="cql", cql_alpha=5.0)
        gen = torch.Generator().manual_seed(0)
        for _ in range(200):
            a.update(sample_uniform(buf, 64, gen, lam=lam))
        with torch.no_grad():
            q_data = a.critic(obs, torch.full((200, 3), 0.6)).mean()
            q_other = a.critic(obs, torch.full((200, 3), -0.6)).mean()
        gaps[lam] = (q_data - q_other).item()
    assert gaps[1.0] > 1.0 and abs(gaps[0.0]) < 0.5 * gaps[1.0]


# --- IQL and shared parts --------------------------------------------------------------------


def test_expectile_loss_weights():
    d = torch.tensor([2.0, -2.0])
    assert expectile_loss(d, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 4) / 2)
    assert expectile_loss(torch.tensor([-1.0]), 0.9).item() == pytest.approx(0.1)


def test_iql_fits_fixed_batch_and_target_moves_slowly():
    a = agent("iql", lr=1e-3)
    b = batches(1)[0]
    nll = lambda: -a.actor.log_prob(a.norm(b.observations), b.actions).mean().item()  # noqa: E731
    nll_first = nll()
    first = a.update(b)
    target_before = [p.clone() for p in a.target_critic.parameters()]
    for _ in range(150):
        last = a.update(b)
    assert last["q_loss"].item() < 0.5 * first["q_loss"].item()
    assert nll() < nll_first - 0.5  # the policy moves towards the batch's actions
    moved = max((p - q).abs().max().item() for p, q in zip(a.target_critic.parameters(), target_before, strict=True))
    online_moved = max((p - q).abs().max().item() for p, q in zip(a.critic.parameters(), target_before, strict=True))
    assert 0 < moved < online_moved


@pytest.mark.parametrize("algo", ["iql", "pex"])
def test_iql_actor_lr_follows_cosine_offline_and_is_constant_online(algo):
    a = agent(algo)
    a.offline_steps_total = 4
    lrs = []
    for b in batches(5):
        lrs.append([g["lr"] for g in a.optim.param_groups])  # the lrs the optimiser's next step uses
        a.update(b)
    assert [lr[2] for lr in lrs] == pytest.approx([3e-4, 2.5606601717798214e-4, 1.5e-4, 0.4393398282201788e-4, 0.0])
    assert all(lr[:2] == [3e-4, 3e-4] for lr in lrs)  # critic and value: constant
    a.start_online()
    for b in batches(2):
        assert [g["lr"] for g in a.optim.param_groups] == [3e-4] * 3
        a.update(b)


def test_actor_lr_schedule_resumes_from_the_checkpoint():
    a = agent("iql")
    a.offline_steps_total = 6
    for b in batches(3):
        a.update(b)
    b2 = agent("iql", seed=123)
    b2.load_state_dict(a.state_dict())
    assert b2.actor_sched.last_epoch == 3
    for b in batches(2):
        a.update(b)
        b2.update(b)
        assert a.optim.param_groups[2]["lr"] == b2.optim.param_groups[2]["lr"] < 3e-4
    state = a.state_dict()
    del state["actor_sched"]
    with pytest.raises(CheckpointError, match="actor_sched"):
        agent("iql").load_state_dict(state)


def test_twin_q_is_two_independent_mlps():
    torch.manual_seed(0)
    q = TwinQ(5, 3, (16, 16))
    obs, act = torch.randn(7, 5), torch.randn(7, 3)
    out = q(obs, act)
    assert out.shape == (2, 7)
    for i in range(2):
        x = torch.cat([obs, act], -1)
        for layer in q.layers:
            x = torch.relu(x @ layer.weight[i] + layer.bias[i])
        np.testing.assert_allclose(
            out[i].detach().numpy(),
            (x @ q.head.weight[i] + q.head.bias[i]).squeeze(-1).detach().numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
    assert torch.equal(q.min(obs, act), out.min(0).values)


def test_soft_update_is_polyak():
    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = dst.weight.detach() + 0.1 * (src.weight.detach() - dst.weight.detach())
    soft_update(dst, src, 0.1)
    torch.testing.assert_close(dst.weight.detach(), expected)


@pytest.mark.parametrize(("algo", "kw"), [("iql", {}), ("pex", {}), ("apl", {}), ("apl", {"apl_engine": "cql"})])
def test_state_round_trip_through_weights_only_load(algo, kw):
    a = agent(algo, **kw)
    for b in batches(4, lam=1.0):
        a.update(b)
    a.start_online()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b2 = agent(algo, seed=123, **kw)
    b2.load_state_dict(state)
    assert b2.phase == "online" and b2.grad_steps == a.grad_steps
    gen1, gen2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    obs = np.linspace(-1, 1, 5).astype(np.float32)
    np.testing.assert_array_equal(a.act(obs, "explore", gen1), b2.act(obs, "explore", gen2))
    # identical next update (optimiser state included)
    nb = batches(1, lam=0.0, seed=9)[0]
    for x in (a, b2):
        torch.manual_seed(0)
        x.update(nb)
    for name in a._modules:
        for p, q in zip(getattr(a, name).parameters(), getattr(b2, name).parameters(), strict=True):
            assert torch.equal(p, q), name


def test_state_from_another_algorithm_is_rejected():
    with pytest.raises(CheckpointError, match="apl"):
        agent("apl").load_state_dict(agent("iql").state_dict())


def test_apl_state_loads_only_as_its_engine():
    """An APL state names its engine; a TD3+BC state never loads as CQL or the reverse. A state
    from before engines existed (no `engine`) is TD3+BC, the only form there was."""
    td3bc, cql = agent("apl").state_dict(), agent("apl", apl_engine="cql").state_dict()
    assert (td3bc["engine"], cql["engine"]) == ("td3bc", "cql")
    with pytest.raises(CheckpointError, match="engine td3bc, this apl agent's is cql"):
        agent("apl", apl_engine="cql").load_state_dict(td3bc)
    with pytest.raises(CheckpointError, match="engine cql, this apl agent's is td3bc"):
        agent("apl").load_state_dict(cql)
    legacy = {k: v for k, v in td3bc.items() if k != "engine"}
    agent("apl").load_state_dict(legacy)
    with pytest.raises(CheckpointError, match="engine td3bc"):
        agent("apl", apl_engine="cql").load_state_dict(legacy)


def test_agent_config_from_mapping_rejects_bad_values():
    cfg = agent_config({"algo": "pex", "hidden_dims": [64, 64], "iql_tau": 0.9}, "agent")
    assert cfg.hidden_dims == (64, 64) and cfg.algo == "pex"
    with pytest.raises(ConfigError, match="agent.algo"):
        agent_config({"algo": "sac"}, "agent")
    with pytest.raises(ConfigError, match="agent.iql_tau"):
        agent_config({"iql_tau": 1.5}, "agent")
    with pytest.raises(ConfigError, match="unknown"):
        agent_config({"taus": 0.5}, "agent")


# --- one TD3; each agent owns its config ---------------------------------------------------------


def test_apl_td3bc_and_the_dataset_builder_run_the_one_td3_update():
    """The builder's behaviour policy and APL's `td3bc` engine are both `td3.TD3`: from the same seed
    and batch they take the same critic step (smoothing noise, twin-Q loss, Adam), the same Polyak
    step of the target critic, and differ only where APL overrides the actor loss."""
    from cfdg.agents.td3 import TD3
    from cfdg.datasets.build import DatasetConfig

    built = DatasetConfig(hidden=32, batch_size=64).td3()
    torch.manual_seed(0)
    td3 = TD3(built, 5, 3, 1.0, CPU)
    apl = agent("apl", normalize_obs=False)  # seed 0, (32, 32), batch 64: the builder's sizes
    assert isinstance(apl, TD3) and type(apl).update is TD3.update
    for b, step in zip(batches(2, lam=0.0), (1, 2), strict=True):
        for x in (td3, apl):
            torch.manual_seed(step)  # the smoothing noise
            x.update(b)
        for name in ("critic", "target_critic") if step == 2 else td3._modules:
            for p, q in zip(getattr(td3, name).parameters(), getattr(apl, name).parameters(), strict=True):
                assert torch.equal(p, q), (step, name)
    # The second update moved the actors (policy_delay 2), each by its own loss: TD3's −mean Q and
    # APL's −(α / mean|Q|)·mean Q.
    assert not torch.equal(td3.actor.net[0].weight, apl.actor.net[0].weight)


def test_each_agent_config_holds_only_its_algorithms_keys():
    """Each agent's config refuses another agent's key by name, in one line; the `agent:` section
    accepts it (presets stack: AntMaze's IQL keys under Cal-QL), checks its value, and leaves it out."""
    from cfdg.agents.registry import AGENTS, agent_keys, algos_reading

    assert "iql_tau" not in {f.name for f in dataclasses.fields(AGENTS["apl"].config_class)}
    for algo, cls in AGENTS.items():
        own = {f.name for f in dataclasses.fields(cls.config_class)}
        key = sorted(agent_keys() - own)[0]
        owner = AGENTS[algos_reading(key)[0]].config_class
        value = getattr(owner(), key)
        with pytest.raises(ConfigError, match=rf"unknown key\(s\) \['{key}'\]") as err:
            from_mapping(cls.config_class, {key: value}, "agent")
        assert "\n" not in str(err.value)
        cfg = agent_config({"algo": algo, key: value})
        assert type(cfg) is cls.config_class and not hasattr(cfg, key)
    with pytest.raises(ConfigError, match="agent.iql_tau: must be in"):
        agent_config({"algo": "calql", "iql_tau": 1.5})
    assert algos_reading("cql_alpha") == ["apl", "calql"] and algos_reading("iql_tau") == ["iql", "pex"]


def test_checkpoint_with_every_agents_keys_still_loads(tmp_path):
    """A checkpoint written before the configs were split holds every agent's keys in agent_config."""
    from cfdg.agents.checkpoint import load_checkpoint, save_checkpoint
    from cfdg.agents.registry import AGENTS, agent_from_checkpoint
    from cfdg.config import to_dict

    a = make_agent(agent_config({"algo": "pex", "iql_tau": 0.9}), 11, 3, 1.0, CPU)  # Hopper's widths
    save_checkpoint(tmp_path / "a.pt", a, env="hopper", seed=0, counters={}, rng={}, env_state=None)
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert set(ckpt["agent_config"]) == {f.name for f in dataclasses.fields(AGENTS["pex"].config_class)}
    every = {}
    for cls in AGENTS.values():
        every.update(to_dict(cls.config_class()))
    ckpt["agent_config"] = {**every, **ckpt["agent_config"]}  # the old, single config's keys
    b = agent_from_checkpoint(ckpt, tmp_path / "a.pt")
    assert type(b) is type(a) and b.cfg == a.cfg
    ckpt["agent_config"]["cql_alpha"] = -1.0
    with pytest.raises(CheckpointError, match="agent.cql_alpha: must be >= 0"):
        agent_from_checkpoint(ckpt, tmp_path / "a.pt")
