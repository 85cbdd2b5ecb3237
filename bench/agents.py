"""Updates/s of the IQL, PEX, APL and Cal-QL agents against a straightforward eager IQL reference.

    python bench/agents.py [--json] [--batch 256] [--hidden 256 256] [--threads N] [--device auto]

The reference is the textbook update: two separate Q networks, a value net and a policy, one
Adam (per-parameter loop) each, four backward passes and an `.item()` on every loss each step.
Ours: one fused twin-Q network, one backward, one fused Adam step, no host syncs. Both sample the
same in-memory batches, so the table compares the update itself. Rounds alternate so load from
other processes hits both alike; the best round counts.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cfdg.agents.registry import agent_config, make_agent
from cfdg.agents.replay import BatchMixer, ReplayBuffer, sample_uniform
from cfdg.device import select_device
from cfdg.fake_data import make_transitions

OBS, ACT = 17, 6  # HalfCheetah / Walker2d sizes


class EagerIQL:
    """The straightforward reference: separate nets and optimisers, a host sync per loss."""

    def __init__(self, hidden: tuple[int, ...], device: torch.device) -> None:
        def mlp(i, o):
            dims, layers = [i, *hidden], []
            for a, b in itertools.pairwise(dims):
                layers += [nn.Linear(a, b), nn.ReLU()]
            return nn.Sequential(*layers, nn.Linear(dims[-1], o)).to(device)

        self.q1, self.q2, self.v, self.pi = mlp(OBS + ACT, 1), mlp(OBS + ACT, 1), mlp(OBS, 1), mlp(OBS, ACT)
        self.log_std = nn.Parameter(torch.zeros(ACT, device=device))
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.opt_q1 = torch.optim.Adam(self.q1.parameters(), 3e-4, foreach=False)
        self.opt_q2 = torch.optim.Adam(self.q2.parameters(), 3e-4, foreach=False)
        self.opt_v = torch.optim.Adam(self.v.parameters(), 3e-4, foreach=False)
        self.opt_pi = torch.optim.Adam([*self.pi.parameters(), self.log_std], 3e-4, foreach=False)

    def update(self, b) -> dict[str, float]:
        obs, act, r, nobs, d = b.observations, b.actions, b.rewards, b.next_observations, b.dones
        sa = torch.cat([obs, act], -1)
        with torch.no_grad():
            tq = torch.min(self.q1_t(sa), self.q2_t(sa)).squeeze(-1)
            nv = self.v(nobs).squeeze(-1)
        adv = tq - self.v(obs).squeeze(-1)
        v_loss = (torch.abs(0.7 - (adv < 0).float()) * adv**2).mean()
        self.opt_v.zero_grad()
        v_loss.backward()
        self.opt_v.step()
        target = r + 0.99 * (1 - d) * nv
        out = {"v_loss": v_loss.item()}
        for name, q, opt in (("q1", self.q1, self.opt_q1), ("q2", self.q2, self.opt_q2)):
            loss = ((q(sa).squeeze(-1) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            out[name] = loss.item()
        for t, s in ((self.q1_t, self.q1), (self.q2_t, self.q2)):
            with torch.no_grad():
                for pt, ps in zip(t.parameters(), s.parameters(), strict=True):
                    pt.mul_(0.995).add_(ps, alpha=0.005)
        w = torch.exp(3.0 * adv.detach()).clamp(max=100)
        mean = torch.tanh(self.pi(obs))
        logp = torch.distributions.Normal(mean, self.log_std.exp()).log_prob(act).sum(-1)
        pi_loss = (w * -logp).mean()
        self.opt_pi.zero_grad()
        pi_loss.backward()
        self.opt_pi.step()
        out["pi_loss"] = pi_loss.item()
        return out


def timed(step, n: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--updates", type=int, default=150, help="updates per timing round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default). 1 by default: these small GEMMs gain little from a second "
        "thread, and on a shared 2-core machine spinning intra-op threads make updates ~10x slower",
    )
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden = tuple(args.hidden)
    cfg = {"hidden_dims": hidden, "batch_size": args.batch, "device": args.device}
    device = select_device(args.device)
    agents = {
        (a, prec): make_agent(agent_config({**cfg, "algo": a, "precision": prec}), OBS, ACT, 1.0, device)
        for a in ("iql", "pex", "apl", "calql")
        for prec in ("fp32", "bf16")
    }
    for prec in ("fp32", "bf16"):
        agents["pex", prec].start_online()
    ref = EagerIQL(hidden, device)
    offline = ReplayBuffer.from_transitions(make_transitions(50_000, OBS, ACT, seed=0), device)
    online = ReplayBuffer.from_transitions(make_transitions(20_000, OBS, ACT, seed=1), device)
    calibrated = ReplayBuffer.from_transitions(data := make_transitions(50_000, OBS, ACT, seed=0), device)
    calibrated.mc_returns = torch.as_tensor(agents["calql", "fp32"].offline_mc_returns(data)).to(device)
    gen = torch.Generator().manual_seed(0)
    concat = BatchMixer("concat", args.batch, online, offline)
    bern = BatchMixer("bernoulli", args.batch, online, offline, p_online=0.5)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(fn):
        rate = timed(fn, args.updates)
        sync()
        return rate

    steps = {"eager IQL (reference), fp32": lambda: ref.update(sample_uniform(offline, args.batch, gen))}
    for prec in ("fp32", "bf16"):
        steps[f"IQL, {prec}"] = lambda p=prec: agents["iql", p].update(sample_uniform(offline, args.batch, gen))
        steps[f"PEX online (mixed batches), {prec}"] = lambda p=prec: agents["pex", p].update(concat.sample(gen))
        steps[f"APL online (Bernoulli batches), {prec}"] = lambda p=prec: agents["apl", p].update(bern.sample(gen))
        steps[f"Cal-QL offline (calibrated), {prec}"] = lambda p=prec: agents["calql", p].update(
            sample_uniform(calibrated, args.batch, gen)
        )
    best = dict.fromkeys(steps, 0.0)
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for name, fn in steps.items():
            best[name] = max(best[name], run(fn))
    ref_rate = best["eager IQL (reference), fp32"]
    rows = [{"agent": k, "updates_per_s": round(v, 1), "vs_reference": round(v / ref_rate, 2)} for k, v in best.items()]
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "hidden": list(hidden),
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"device {device}, {result['threads']} threads, batch {args.batch}, hidden {hidden}")
        print(f"{'agent':40s} {'updates/s':>10s} {'vs eager IQL':>13s}")
        for r in rows:
            print(f"{r['agent']:40s} {r['updates_per_s']:10.1f} {r['vs_reference']:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
