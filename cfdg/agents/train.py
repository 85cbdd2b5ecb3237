"""Offline pretraining and resumable online rounds: the loop, readable top to bottom.

A round is a pure function of its inputs: (checkpoint, offline store, online store so far,
synthetic store) -> (checkpoint, online store). The checkpoint carries everything the loop
reads (networks, targets, optimisers, lr schedule position, every RNG, the MuJoCo episode in
progress, step counters; see `checkpoint` and `resume`), so two rounds of K steps equal one
round of 2K steps bit for bit on CPU, and a killed round rerun from its input checkpoint writes
identical outputs. The loop never asks which agent it runs: what differs between agents (config,
batch paradigm, online buffer, the envs it runs on) is a class attribute of the agent, and how a
paradigm fills and mixes its buffers lives in `replay`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from cfdg import envs
from cfdg.agents.checkpoint import load_checkpoint, save_checkpoint
from cfdg.agents.config import AgentConfig, PretrainConfig, RolloutConfig
from cfdg.agents.evaluate import evaluate
from cfdg.agents.registry import agent_from_checkpoint, check_env, make_agent
from cfdg.agents.replay import BatchMixer, ReplayBuffer, Synthetic, TransitionLog, round_buffers, sample_uniform
from cfdg.agents.resume import Rngs, capture_env, capture_rng, restore_env, restore_rng, seed_everything
from cfdg.config import to_dict
from cfdg.device import select_device, torch_threads
from cfdg.errors import CheckpointError, StoreError
from cfdg.io import digest
from cfdg.store import StoreMeta, Transitions, append_store, read_store, write_store

T = TypeVar("T")


class MetricSums:
    """Accumulates update metrics on the device; one host sync per `flush`."""

    def __init__(self) -> None:
        self.keys: list[str] | None = None
        self.sum: torch.Tensor | None = None
        self.n = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.float() for v in metrics.values()])
        if self.sum is None:
            self.keys, self.sum = list(metrics), values
        else:
            self.sum += values
        self.n += 1

    def flush(self) -> dict[str, float]:
        if not self.n:
            return {}
        means = (self.sum / self.n).cpu().tolist()
        out = dict(zip(self.keys, means, strict=True))
        self.sum, self.n = None, 0
        return out


def _env_spec(env: str, data: Transitions, where: Path) -> float:
    """Check the data fits the env; return max_action (symmetric action bounds assumed)."""
    e = envs.make_env(env)
    obs_dim, act_dim = int(e.observation_space.shape[0]), int(e.action_space.shape[0])
    high = float(e.action_space.high[0])
    e.close()
    envs.check_layout(env, data.obs_dim, data.act_dim, where)
    if (obs_dim, act_dim) != (data.obs_dim, data.act_dim):
        raise StoreError(
            f"{where}: obs/act dims {data.obs_dim}/{data.act_dim} do not match env '{env}' ({obs_dim}/{act_dim})"
        )
    return high


def _in_cfg_threads(fn: Callable[..., T]) -> Callable[..., T]:
    """Run `fn` with torch's thread count set to its argument `cfg.threads` (see torch_threads)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        cfg = signature.bind(*args, **kwargs).arguments["cfg"]
        with torch_threads(cfg.threads):
            return fn(*args, **kwargs)

    return wrapper


@_in_cfg_threads
def pretrain(
    offline_store: Path,
    agent_cfg: AgentConfig,
    cfg: PretrainConfig,
    out_checkpoint: Path,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Offline training for `cfg.steps` gradient steps; writes the checkpoint, returns metrics."""
    offline_store, out_checkpoint = Path(offline_store), Path(out_checkpoint)
    data, attrs = read_store(offline_store)
    env = envs.env_name(attrs["env_id"])
    check_env(agent_cfg.algo, env)
    max_action = _env_spec(env, data, offline_store)
    seed_everything(seed)
    rngs = Rngs.seeded(seed)
    device = select_device(agent_cfg.device)
    agent = make_agent(agent_cfg, data.obs_dim, data.act_dim, max_action, device)
    agent.set_obs_stats(data.observations)
    agent.offline_steps_total = cfg.steps
    buffer = ReplayBuffer.from_transitions(data, device)
    if agent.needs_mc_returns:  # Cal-QL: reference values from the offline episodes
        buffer.mc_returns = torch.as_tensor(agent.offline_mc_returns(data)).to(device)
    del data

    sums, losses, curve = MetricSums(), [], []
    for step in tqdm(range(1, cfg.steps + 1), desc=f"pretrain {agent.algo}", disable=not progress):
        sums.add(agent.update(sample_uniform(buffer, agent_cfg.batch_size, rngs.sampler, lam=1.0)))
        if step % cfg.log_every == 0 or step == cfg.steps:
            losses.append({"step": step, **sums.flush()})
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            curve.append({"step": step, **evaluate(agent, env, cfg.eval_episodes, cfg.eval_seed)})

    counters = {"env_steps_total": 0, "online_rows": 0, "rounds": 0}
    save_checkpoint(out_checkpoint, agent, env=env, seed=seed, counters=counters, rng=capture_rng(rngs), env_state=None)
    return {
        "algo": agent.algo,
        "env": env,
        "steps": cfg.steps,
        "eval": curve,
        "final_normalized_score": curve[-1]["normalized_score"],
        "final_return": curve[-1]["return_mean"],
        "losses": losses,
    }


# --- online rounds ----------------------------------------------------------------------------


def _read_matching(path: Path, env: str, obs_dim: int, act_dim: int, kind: str) -> Transitions:
    data, attrs = read_store(path)
    if attrs["kind"] != kind:
        raise StoreError(f"{path}: store kind is '{attrs['kind']}', expected '{kind}'")
    if envs.env_name(attrs["env_id"]) != env:
        raise StoreError(f"{path}: store is for env '{attrs['env_id']}', the run is on '{env}'")
    if len(data) and (data.obs_dim, data.act_dim) != (obs_dim, act_dim):
        raise StoreError(f"{path}: obs/act dims {data.obs_dim}/{data.act_dim}, expected {obs_dim}/{act_dim}")
    return data


@_in_cfg_threads
def run_round(
    checkpoint_in: Path,
    offline_store: Path,
    online_store_in: Path | None,
    synthetic_store_in: Path | None,
    cfg: RolloutConfig,
    out_checkpoint: Path,
    out_online_store: Path,
    round_index: int,
    progress: bool = True,
    algo: str | None = None,
    apl_engine: str | None = None,
) -> dict[str, Any]:
    """Online fine-tuning for `cfg.steps` env steps; writes the checkpoint and the online store so far.

    `algo` (and for an APL checkpoint `apl_engine`), when given, must match the checkpoint's
    (params.yaml against the artifact).
    """
    checkpoint_in, offline_store = Path(checkpoint_in), Path(offline_store)
    out_checkpoint, out_online_store = Path(out_checkpoint), Path(out_online_store)
    offline, off_attrs = read_store(offline_store)
    env = envs.env_name(off_attrs["env_id"])
    ckpt = load_checkpoint(
        checkpoint_in, env=env, algo=algo, obs_dim=offline.obs_dim, act_dim=offline.act_dim, apl_engine=apl_engine
    )
    agent = agent_from_checkpoint(ckpt, checkpoint_in)
    rngs = Rngs.seeded(0)
    restore_rng(ckpt["rng"], rngs)  # before anything random: PEX's new policy init draws from torch's RNG
    counters = dict(ckpt["counters"])
    obs_dim, act_dim, device = agent.obs_dim, agent.act_dim, agent.device

    if online_store_in is None:
        if counters["online_rows"]:
            raise CheckpointError(f"{checkpoint_in}: has {counters['online_rows']} online rows; pass the online store")
        previous = TransitionLog(0, obs_dim, act_dim).transitions()  # round 1: no online rows yet
    else:
        previous = _read_matching(Path(online_store_in), env, obs_dim, act_dim, "online")
        if len(previous) != counters["online_rows"]:
            raise CheckpointError(
                f"{online_store_in}: holds {len(previous)} rows but {checkpoint_in} was saved after "
                f"{counters['online_rows']}; they are not from the same run"
            )
    synthetic = None
    if synthetic_store_in is not None:
        synthetic = _read_matching(Path(synthetic_store_in), env, obs_dim, act_dim, "synthetic")

    # Buffers, filled and mixed as the agent's paradigm says (replay.py).
    capacity = cfg.online_buffer_size or agent.online_buffer or len(previous) + cfg.steps
    online_buf, offline_buf = round_buffers(agent.paradigm, offline, previous, capacity, cfg.steps, device)
    del offline, previous
    mixer = BatchMixer(
        agent.paradigm,
        agent.cfg.batch_size,
        online_buf,
        offline_buf,
        Synthetic.from_transitions(synthetic, device),
        synthetic_ratio=cfg.synthetic_ratio,
        synthetic_online_fraction=cfg.synthetic_online_fraction,
        real_online_share=cfg.real_online_share,
        p_online=cfg.p_online,
        online_threshold=cfg.online_threshold,
    )

    if agent.phase == "offline":
        agent.start_online()
    e = envs.make_env(env, seed=ckpt["seed"] + 1)
    if ckpt["env_state"] is None:
        obs, ep_return, ep_len = e.reset()[0], 0.0, 0
    else:
        obs, ep_return, ep_len = restore_env(e, ckpt["env_state"])

    log = TransitionLog(cfg.steps, obs_dim, act_dim)
    sums, losses, evals, episodes = MetricSums(), [], [], []
    updates = 0
    for _ in tqdm(range(cfg.steps), desc=f"round {round_index} {agent.algo}", disable=not progress):
        if counters["env_steps_total"] < cfg.random_steps:
            action = agent.random_action(rngs.act)
        else:
            action = agent.act(obs, "explore", rngs.act)
        next_obs, reward, term, trunc, _ = e.step(action)
        i = log.add(obs, action, reward, next_obs, term, trunc)
        mixer.add(log.obs[i], log.act[i], float(reward), log.next_obs[i], term)
        ep_return, ep_len = ep_return + float(reward), ep_len + 1
        if term or trunc:
            episodes.append({"env_step": counters["env_steps_total"] + 1, "return": ep_return, "length": ep_len})
            (obs, _), ep_return, ep_len = e.reset(), 0.0, 0
        else:
            obs = next_obs
        counters["env_steps_total"] += 1
        counters["online_rows"] += 1

        t = counters["env_steps_total"]
        if online_buf.total >= cfg.warmup_steps and t % cfg.train_every == 0:
            for _ in range(cfg.utd * cfg.train_every):
                sums.add(agent.update(mixer.sample(rngs.sampler)))
                updates += 1
        if t % cfg.log_every == 0:
            losses.append({"env_step": t, **sums.flush()})
        if cfg.eval_every and t % cfg.eval_every == 0:
            evals.append({"env_step": t, **evaluate(agent, env, cfg.eval_episodes, cfg.eval_seed)})
    if sums.n:
        losses.append({"env_step": counters["env_steps_total"], **sums.flush()})
    if not evals or evals[-1]["env_step"] != counters["env_steps_total"]:
        final = evaluate(agent, env, cfg.eval_episodes, cfg.eval_seed)
        evals.append({"env_step": counters["env_steps_total"], **final})
    counters["rounds"] += 1

    # Outputs: the online store (earlier rows' chunk files unchanged), then the checkpoint.
    inputs = {"checkpoint": digest(checkpoint_in), "offline_store": digest(offline_store)}
    if online_store_in is not None:
        inputs["online_store"] = digest(online_store_in)
    if synthetic_store_in is not None:
        inputs["synthetic_store"] = digest(synthetic_store_in)
    meta = StoreMeta(
        kind="online",
        env_id=off_attrs["env_id"],
        source=f"online:{agent.algo}",
        round=round_index,
        seed=int(ckpt["seed"]),
        params=to_dict(cfg),
        inputs=inputs,
    )
    new = log.transitions()
    if online_store_in is None:
        write_store(out_online_store, new, meta, cfg.chunk_rows)
    else:
        append_store(online_store_in, new, out_online_store, meta)
    save_checkpoint(
        out_checkpoint,
        agent,
        env=env,
        seed=int(ckpt["seed"]),
        counters=counters,
        rng=capture_rng(rngs),
        env_state=capture_env(e, obs, ep_return, ep_len),
    )
    e.close()
    total_drawn = max(sum(mixer.drawn.values()), 1)
    return {
        "algo": agent.algo,
        "env": env,
        "round": round_index,
        "env_steps": cfg.steps,
        "env_steps_total": counters["env_steps_total"],
        "online_rows": counters["online_rows"],
        "gradient_steps": updates,
        "eval": evals,
        "final_return": evals[-1]["return_mean"],
        "final_normalized_score": evals[-1]["normalized_score"],
        "losses": losses,
        "q_mean": losses[-1].get("q_mean") if losses else None,
        "data_drawn": mixer.drawn,
        "data_fractions": {k: v / total_drawn for k, v in mixer.drawn.items()},
        "apl_batches": mixer.sides,
        "episodes": episodes,
        "synthetic_rows": 0 if synthetic is None else len(synthetic),
    }
