"""Offline pretraining, resumable online rounds, evaluation and the agent checkpoint format.

A round is a pure function of its inputs: (checkpoint, offline store, online store so far,
synthetic store) -> (checkpoint, online store). The checkpoint carries everything the loop
reads (networks, targets, optimisers, lr schedule position, every RNG, the MuJoCo episode in
progress, step counters), so two rounds of K steps equal one round of 2K steps bit for bit on
CPU, and a killed round rerun from its input checkpoint writes identical outputs.

Checkpoint (`atomic_torch_save`, read with `torch.load(..., weights_only=True)`), format
"cfdg-agent/1": algo, env, obs_dim, act_dim, max_action, seed, agent_config (plain dict),
agent (module + optimiser state dicts, obs normaliser, phase, grad_steps, offline_steps_total
which fixes the actor's cosine lr), counters (env_steps_total, online_rows, rounds), rng (torch,
cuda, numpy as lists, python, sampler and act generators), env_state (MuJoCo integration state,
TimeLimit elapsed steps, env np_random, current obs, running episode return/length; None after
pretraining). The online buffers are rebuilt from the online store: row i sits at slot
i % capacity, so APL's FIFO position follows from `online_rows`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import mujoco
import numpy as np
import torch
from tqdm.auto import tqdm

from cfdg import envs
from cfdg.agents import PARADIGM, Agent, AgentConfig, make_agent
from cfdg.config import check, from_mapping, to_dict
from cfdg.device import select_device, torch_threads
from cfdg.errors import CheckpointError, ConfigError, StoreError
from cfdg.io import atomic_torch_save, digest, read_checkpoint
from cfdg.replay import SOURCES, BatchMixer, ReplayBuffer, Synthetic, sample_uniform
from cfdg.store import StoreMeta, Transitions, append_store, read_store, write_store

CHECKPOINT_FORMAT = "cfdg-agent/1"
T = TypeVar("T")
APL_ONLINE_BUFFER = 20_000  # APL's FIFO online buffer


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1_000_000  # gradient steps on offline data
    eval_every: int = 50_000  # 0: evaluate only at the end
    eval_episodes: int = 10
    eval_seed: int = 10_000  # episode i of every evaluation resets with eval_seed + i
    log_every: int = 5_000
    threads: int = 0  # torch intra-op threads while training; 0 leaves torch's setting

    def __post_init__(self) -> None:
        check(self.threads >= 0, "pretrain.threads", f"must be >= 0, got {self.threads}")
        check(self.steps >= 1, "pretrain.steps", f"must be >= 1, got {self.steps}")
        check(self.eval_every >= 0, "pretrain.eval_every", f"must be >= 0, got {self.eval_every}")
        check(self.eval_episodes >= 1, "pretrain.eval_episodes", f"must be >= 1, got {self.eval_episodes}")
        check(self.log_every >= 1, "pretrain.log_every", f"must be >= 1, got {self.log_every}")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    steps: int = 100_000  # env steps per round
    utd: int = 1  # gradient steps per env step
    warmup_steps: int = 5_000  # online rows needed before gradient steps start (PEX: 5000)
    random_steps: int = 0  # first online env steps taken with uniform random actions
    eval_every: int = 0  # env steps; 0: evaluate only at the end of the round
    eval_episodes: int = 10
    eval_seed: int = 10_000
    synthetic_ratio: float = 1 / 3  # r: share of each batch that is synthetic
    synthetic_online_fraction: float = 0.8  # synthetic online:offline 8:2
    online_fraction: float = 0.5  # concat paradigm: share of the real part that is online
    p_online: float = 0.5  # bernoulli paradigm (APL): P(online-side batch)
    online_threshold: int = 10_000  # APL: online batches only once the online buffer holds more
    online_buffer_size: int | None = None  # None: APL 20,000 FIFO, IQL/PEX keep every online row
    chunk_rows: int = 10_000  # online store chunking; must divide `steps`
    log_every: int = 1_000
    threads: int = 0  # torch intra-op threads while training; 0 leaves torch's setting

    def __post_init__(self) -> None:
        w = "online"
        check(self.threads >= 0, f"{w}.threads", f"must be >= 0, got {self.threads}")
        check(self.steps >= 1, f"{w}.steps", f"must be >= 1, got {self.steps}")
        check(self.utd >= 1, f"{w}.utd", f"must be >= 1, got {self.utd}")
        check(self.warmup_steps >= 1, f"{w}.warmup_steps", f"must be >= 1, got {self.warmup_steps}")
        check(self.random_steps >= 0, f"{w}.random_steps", f"must be >= 0, got {self.random_steps}")
        check(self.eval_every >= 0, f"{w}.eval_every", f"must be >= 0, got {self.eval_every}")
        check(self.eval_episodes >= 1, f"{w}.eval_episodes", f"must be >= 1, got {self.eval_episodes}")
        for name in ("synthetic_ratio", "synthetic_online_fraction", "online_fraction", "p_online"):
            v = getattr(self, name)
            check(0 <= v <= 1, f"{w}.{name}", f"must be in [0, 1], got {v}")
        check(self.synthetic_ratio < 1, f"{w}.synthetic_ratio", "must be < 1 (batches need real data)")
        check(self.online_threshold >= 0, f"{w}.online_threshold", f"must be >= 0, got {self.online_threshold}")
        if self.online_buffer_size is not None:
            check(self.online_buffer_size >= 1, f"{w}.online_buffer_size", "must be >= 1")
        check(self.chunk_rows >= 1, f"{w}.chunk_rows", f"must be >= 1, got {self.chunk_rows}")
        check(
            self.steps % self.chunk_rows == 0,
            f"{w}.chunk_rows",
            f"{self.chunk_rows} must divide steps {self.steps} so earlier rounds' chunk files stay byte-identical",
        )
        check(self.log_every >= 1, f"{w}.log_every", f"must be >= 1, got {self.log_every}")


# --- RNG state as plain data (weights_only-loadable) -------------------------------------------


@dataclasses.dataclass
class Rngs:
    """Generators owned by the loop: batch sampling and acting. Evaluation gets its own."""

    sampler: torch.Generator
    act: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> Rngs:
        return cls(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the global RNG)
    torch.manual_seed(seed)


def capture_rng(rngs: Rngs) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": _plain(random.getstate()),
        "sampler": rngs.sampler.get_state(),
        "act": rngs.act.get_state(),
    }
    return state


def restore_rng(state: dict[str, Any], rngs: Rngs) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    rngs.sampler.set_state(state["sampler"])
    rngs.act.set_state(state["act"])


def _plain(x: Any) -> Any:
    return [_plain(v) for v in x] if isinstance(x, tuple | list) else x


# --- env episode state -----------------------------------------------------------------------


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit:
    e = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    raise CheckpointError(f"env {env} has no TimeLimit wrapper; cannot checkpoint its episode")


def capture_env(env: gym.Env, obs: np.ndarray, episode_return: float, episode_length: int) -> dict[str, Any]:
    """The episode in progress: full MuJoCo integration state, time limit counter, env RNG."""
    u = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mj = np.empty(mujoco.mj_stateSize(u.model, spec))
    mujoco.mj_getState(u.model, u.data, mj, spec)
    return {
        "mj_state": torch.from_numpy(mj),
        "qpos": torch.from_numpy(u.data.qpos.copy()),
        "qvel": torch.from_numpy(u.data.qvel.copy()),
        "elapsed_steps": int(_time_limit(env)._elapsed_steps),
        "np_random": u.np_random.bit_generator.state,
        "obs": torch.from_numpy(np.asarray(obs, dtype=np.float64).copy()),
        "episode_return": float(episode_return),
        "episode_length": int(episode_length),
        "extra": envs.episode_state(env),
    }


def restore_env(env: gym.Env, state: dict[str, Any]) -> tuple[np.ndarray, float, int]:
    u = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mj = state["mj_state"].numpy()
    if mj.shape[0] != mujoco.mj_stateSize(u.model, spec):
        raise CheckpointError("checkpoint's MuJoCo state does not fit this env")
    envs.restore_episode_state(env, state.get("extra"))
    mujoco.mj_setState(u.model, u.data, mj, spec)
    mujoco.mj_forward(u.model, u.data)
    _time_limit(env)._elapsed_steps = state["elapsed_steps"]
    u.np_random.bit_generator.state = state["np_random"]
    return state["obs"].numpy().copy(), float(state["episode_return"]), int(state["episode_length"])


# --- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(path: Path, agent: Agent, *, env: str, seed: int, counters: dict[str, int], rng, env_state) -> Path:
    obj = {
        "format": CHECKPOINT_FORMAT,
        "algo": agent.algo,
        "env": env,
        "obs_dim": agent.obs_dim,
        "act_dim": agent.act_dim,
        "max_action": agent.max_action,
        "seed": int(seed),
        "agent_config": to_dict(agent.cfg),
        "agent": agent.state_dict(),
        "counters": {k: int(v) for k, v in counters.items()},
        "rng": rng,
        "env_state": env_state,
    }
    return atomic_torch_save(path, obj)


def load_checkpoint(
    path: str | Path, *, env: str | None = None, algo: str | None = None, obs_dim: int | None = None, act_dim=None
) -> dict[str, Any]:
    """Load with weights_only=True and check it belongs to `env` / `algo` / dims when given."""
    path = Path(path)
    ckpt = read_checkpoint(path, "agent")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cfdg agent checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    if env is not None and ckpt["env"] != envs.env_name(env):
        raise CheckpointError(f"{path}: checkpoint is for env '{ckpt['env']}', not '{envs.env_name(env)}'")
    if algo is not None and ckpt["algo"] != algo:
        raise CheckpointError(f"{path}: checkpoint is for algorithm '{ckpt['algo']}', not '{algo}'")
    for name, want in (("obs_dim", obs_dim), ("act_dim", act_dim)):
        if want is not None and ckpt[name] != want:
            raise CheckpointError(f"{path}: checkpoint has {name} {ckpt[name]}, the data has {want}")
    return ckpt


def _agent_from_checkpoint(ckpt: dict[str, Any], where: Path) -> Agent:
    try:
        cfg = from_mapping(AgentConfig, ckpt["agent_config"], f"{where}: agent_config")
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    agent = make_agent(cfg, ckpt["obs_dim"], ckpt["act_dim"], ckpt["max_action"], select_device(cfg.device))
    agent.load_state_dict(ckpt["agent"])
    return agent


# --- evaluation and metrics --------------------------------------------------------------------


def evaluate(agent: Agent, env: str, episodes: int, seed: int) -> dict[str, Any]:
    """Deterministic-mode returns over `episodes` episodes reset with seeds seed, seed+1, ...

    Uses its own env and generator, so evaluating never changes the training trajectory.
    """
    e = envs.make_env(env)
    gen = torch.Generator().manual_seed(seed)
    returns, lengths = [], []
    for i in range(episodes):
        obs, _ = e.reset(seed=seed + i)
        total, n, done = 0.0, 0, False
        while not done:
            obs, r, term, trunc, _ = e.step(agent.act(obs, "eval", gen))
            total, n, done = total + float(r), n + 1, term or trunc
        returns.append(total)
        lengths.append(n)
    e.close()
    scores = [envs.normalized_score(env, r) for r in returns]
    return {
        "returns": returns,
        "lengths": lengths,
        "return_mean": float(np.mean(returns)),
        "normalized_scores": scores,
        "normalized_score": float(np.mean(scores)),
    }


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


# --- pretraining ------------------------------------------------------------------------------


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
    max_action = _env_spec(env, data, offline_store)
    seed_everything(seed)
    rngs = Rngs.seeded(seed)
    device = select_device(agent_cfg.device)
    agent = make_agent(agent_cfg, data.obs_dim, data.act_dim, max_action, device)
    agent.set_obs_stats(data.observations)
    agent.offline_steps_total = cfg.steps
    buffer = ReplayBuffer.from_transitions(data, device)
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


class _OnlineLog:
    """This round's new transitions, preallocated (they become the online store's new rows)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.zeros((n, obs_dim), np.float32)
        self.act = np.zeros((n, act_dim), np.float32)
        self.rew = np.zeros(n, np.float32)
        self.next_obs = np.zeros((n, obs_dim), np.float32)
        self.term = np.zeros(n, bool)
        self.trunc = np.zeros(n, bool)
        self.n = 0

    def add(self, obs, act, rew, next_obs, term, trunc) -> int:
        i = self.n
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i] = obs, act, rew, next_obs
        self.term[i], self.trunc[i] = term, trunc
        self.n += 1
        return i

    def transitions(self) -> Transitions:
        n = self.n
        return Transitions.from_arrays(
            {
                "observations": self.obs[:n],
                "actions": self.act[:n],
                "rewards": self.rew[:n],
                "next_observations": self.next_obs[:n],
                "terminals": self.term[:n],
                "timeouts": self.trunc[:n] & ~self.term[:n],
            }
        )


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
    cfg: OnlineConfig,
    out_checkpoint: Path,
    out_online_store: Path,
    round_index: int,
    progress: bool = True,
    algo: str | None = None,
) -> dict[str, Any]:
    """Online fine-tuning for `cfg.steps` env steps; writes the checkpoint and the online store so far.

    `algo`, when given, must match the checkpoint's algorithm (params.yaml against the artifact).
    """
    checkpoint_in, offline_store = Path(checkpoint_in), Path(offline_store)
    out_checkpoint, out_online_store = Path(out_checkpoint), Path(out_online_store)
    offline, off_attrs = read_store(offline_store)
    env = envs.env_name(off_attrs["env_id"])
    ckpt = load_checkpoint(checkpoint_in, env=env, algo=algo, obs_dim=offline.obs_dim, act_dim=offline.act_dim)
    agent = _agent_from_checkpoint(ckpt, checkpoint_in)
    rngs = Rngs.seeded(0)
    restore_rng(ckpt["rng"], rngs)  # before anything random: PEX's new policy init draws from torch's RNG
    counters = dict(ckpt["counters"])
    obs_dim, act_dim, device = agent.obs_dim, agent.act_dim, agent.device

    if online_store_in is None:
        if counters["online_rows"]:
            raise CheckpointError(f"{checkpoint_in}: has {counters['online_rows']} online rows; pass the online store")
        previous = _OnlineLog(0, obs_dim, act_dim).transitions()  # round 1: no online rows yet
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

    # Buffers. APL: FIFO online buffer; its offline buffer is the dataset plus every online row.
    paradigm = PARADIGM[agent.algo]
    n_prev = len(previous)
    if cfg.online_buffer_size is not None:
        capacity = cfg.online_buffer_size
    else:
        capacity = APL_ONLINE_BUFFER if agent.algo == "apl" else n_prev + cfg.steps
    online_buf = ReplayBuffer(capacity, obs_dim, act_dim, device)
    online_buf.extend(previous)
    if paradigm == "bernoulli":
        offline_buf = ReplayBuffer(len(offline) + n_prev + cfg.steps, obs_dim, act_dim, device)
        offline_buf.extend(offline)
        offline_buf.extend(previous)
    else:
        offline_buf = ReplayBuffer.from_transitions(offline, device)
    del offline, previous
    mixer = BatchMixer(
        paradigm,
        agent.cfg.batch_size,
        online_buf,
        offline_buf,
        Synthetic.from_transitions(synthetic, device),
        synthetic_ratio=cfg.synthetic_ratio,
        synthetic_online_fraction=cfg.synthetic_online_fraction,
        online_fraction=cfg.online_fraction,
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

    log = _OnlineLog(cfg.steps, obs_dim, act_dim)
    sums, losses, evals, episodes = MetricSums(), [], [], []
    drawn = dict.fromkeys(SOURCES, 0)
    lam_counts = {"online": 0, "offline": 0}
    updates = 0
    for _ in tqdm(range(cfg.steps), desc=f"round {round_index} {agent.algo}", disable=not progress):
        if counters["env_steps_total"] < cfg.random_steps:
            action = agent.random_action(rngs.act)
        else:
            action = agent.act(obs, "explore", rngs.act)
        next_obs, reward, term, trunc, _ = e.step(action)
        log.add(obs, action, reward, next_obs, term, trunc)
        online_buf.add(log.obs[log.n - 1], log.act[log.n - 1], float(reward), log.next_obs[log.n - 1], term)
        if paradigm == "bernoulli":
            offline_buf.add(log.obs[log.n - 1], log.act[log.n - 1], float(reward), log.next_obs[log.n - 1], term)
        ep_return, ep_len = ep_return + float(reward), ep_len + 1
        if term or trunc:
            episodes.append({"env_step": counters["env_steps_total"] + 1, "return": ep_return, "length": ep_len})
            (obs, _), ep_return, ep_len = e.reset(), 0.0, 0
        else:
            obs = next_obs
        counters["env_steps_total"] += 1
        counters["online_rows"] += 1

        if online_buf.total >= cfg.warmup_steps:
            for _ in range(cfg.utd):
                batch = mixer.sample(rngs.sampler)
                sums.add(agent.update(batch))
                updates += 1
                for k, v in batch.counts.items():
                    drawn[k] += v
                if batch.lam is not None:
                    lam_counts["offline" if batch.lam else "online"] += 1
        t = counters["env_steps_total"]
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
    total_drawn = max(sum(drawn.values()), 1)
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
        "data_drawn": drawn,
        "data_fractions": {k: v / total_drawn for k, v in drawn.items()},
        "apl_batches": lam_counts if paradigm == "bernoulli" else None,
        "episodes": episodes,
        "synthetic_rows": 0 if synthetic is None else len(synthetic),
    }


_CHECKPOINT_KEYS = (
    "algo",
    "env",
    "obs_dim",
    "act_dim",
    "max_action",
    "seed",
    "agent_config",
    "agent",
    "counters",
    "rng",
    "env_state",
)
