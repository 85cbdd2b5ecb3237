"""In-memory replay buffers, the log of new transitions, and the two batch-mixing paradigms of paper 3.3.

Stores are read once (`read_store`) into device tensors; batches are index gathers, so no Zarr
I/O happens per batch. Indices and coin flips come from one CPU `torch.Generator`, so the same
seed gives the same batches on every device, and a checkpointed generator state resumes them.

- concat (IQL, PEX): batch = online ⊕ offline ⊕ synthetic; a fraction `synthetic_ratio` r of the
  batch is synthetic, a share `synthetic_online_fraction` (0.8) of it online-labelled; a share
  `real_online_share` (0.5, PEX's buffer mix) of the real part is online, the rest offline.
- bernoulli (APL): with probability p_online the real part is from the online side (λ = 0), else
  from the offline side (λ = 1); a fraction r of the batch is synthetic, drawn 8:2 online:offline
  labelled as in the concat recipe. Paper 3.3 adds synthetic rows to either side "as part of online
  data or offline data", and 4.1 keeps the 8:2 "the same across all tasks, datasets and methods";
  λ follows the side the real rows came from.

Counts that are not integers are rounded stochastically (floor + Bernoulli(fraction)) so the
expected proportions are exact; integer counts draw nothing, so with no synthetic data (None,
an empty store, or r = 0) the sampler consumes exactly the random numbers of the base algorithm.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from cfdg.agents.base import Paradigm
from cfdg.store import LABEL_OFFLINE, LABEL_ONLINE, Transitions

SOURCES = ("online", "offline", "synthetic_online", "synthetic_offline")


class ReplayBuffer:
    """A ring of `capacity` transitions held as device tensors; row i of the stream lives at slot i % capacity.

    Placing rows by their global index makes a buffer rebuilt from a store identical to one that
    grew step by step, which is what lets an online round resume bit for bit (APL's FIFO included).
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.device = int(capacity), device
        self.observations = torch.zeros(self.capacity, obs_dim, device=device)
        self.actions = torch.zeros(self.capacity, act_dim, device=device)
        self.rewards = torch.zeros(self.capacity, device=device)
        self.next_observations = torch.zeros(self.capacity, obs_dim, device=device)
        self.dones = torch.zeros(self.capacity, device=device)  # terminals only: timeouts bootstrap
        self.mc_returns: torch.Tensor | None = None  # Cal-QL's reference values of offline rows, when set
        self.total = 0  # rows ever added

    @classmethod
    def from_transitions(cls, data: Transitions, device: torch.device, capacity: int | None = None) -> ReplayBuffer:
        buf = cls(capacity or max(len(data), 1), data.obs_dim, data.act_dim, device)
        buf.extend(data)
        return buf

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def extend(self, data: Transitions) -> None:
        """Add rows in order; only the last `capacity` can survive, placed at their ring slots."""
        n = len(data)
        keep = min(n, self.capacity)
        idx = torch.arange(self.total + n - keep, self.total + n) % self.capacity
        idx = idx.to(self.device)
        for name in ("observations", "actions", "rewards", "next_observations"):
            src = torch.as_tensor(getattr(data, name)[n - keep :]).to(self.device)
            getattr(self, name)[idx] = src
        self.dones[idx] = torch.as_tensor(data.terminals[n - keep :]).to(self.device, torch.float32)
        self.total += n

    def add(self, obs: np.ndarray, act: np.ndarray, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
        i = self.total % self.capacity
        self.observations[i] = torch.from_numpy(obs)
        self.actions[i] = torch.from_numpy(act)
        self.rewards[i] = reward
        self.next_observations[i] = torch.from_numpy(next_obs)
        self.dones[i] = float(terminal)
        self.total += 1

    def sample_index(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self), (n,), generator=gen).to(self.device)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            self.observations[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_observations[idx],
            self.dones[idx],
        )


class TransitionLog:
    """New transitions in the order collected, preallocated on the host, timeouts included: what
    becomes a store (an online round's new rows, the dataset builder's replay). The replay buffer
    beside it is what training samples from."""

    def __init__(self, n: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.zeros((n, obs_dim), np.float32)
        self.act = np.zeros((n, act_dim), np.float32)
        self.rew = np.zeros(n, np.float32)
        self.next_obs = np.zeros((n, obs_dim), np.float32)
        self.term = np.zeros(n, bool)
        self.trunc = np.zeros(n, bool)
        self.n = 0

    def add(self, obs, act, rew, next_obs, term, trunc) -> int:
        """Append one row (cast to the log's dtypes); returns its index."""
        i = self.n
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i] = obs, act, rew, next_obs
        self.term[i], self.trunc[i] = term, trunc
        self.n += 1
        return i

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the rows so far in the store's layout (a timeout is a truncation that is not a terminal)."""
        n = self.n
        return {
            "observations": self.obs[:n].copy(),
            "actions": self.act[:n].copy(),
            "rewards": self.rew[:n].copy(),
            "next_observations": self.next_obs[:n].copy(),
            "terminals": self.term[:n].copy(),
            "timeouts": self.trunc[:n] & ~self.term[:n],
        }

    def transitions(self) -> Transitions:
        return Transitions.from_arrays(self.arrays())


@dataclasses.dataclass(frozen=True)
class Batch:
    """One training batch plus what it drew from each source and, for APL, its λ."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    counts: dict[str, int]
    lam: float | None = None  # APL: 0.0 online side, 1.0 offline side (TD3+BC's BC term, CQL's conservative term)
    mc_returns: torch.Tensor | None = None  # Cal-QL: when every source of the batch has them

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


@dataclasses.dataclass(frozen=True)
class Synthetic:
    """A synthetic store split by label; either side may be None (no rows with that label)."""

    online: ReplayBuffer | None
    offline: ReplayBuffer | None

    @classmethod
    def from_transitions(cls, data: Transitions | None, device: torch.device) -> Synthetic | None:
        """None for no store or an empty one: the algorithm then runs exactly as its base version."""
        if data is None or len(data) == 0:
            return None
        labels = data.labels if data.labels is not None else np.full(len(data), LABEL_ONLINE, np.uint8)
        parts = {}
        for name, label in (("online", LABEL_ONLINE), ("offline", LABEL_OFFLINE)):
            rows = np.flatnonzero(labels == label)
            parts[name] = ReplayBuffer.from_transitions(data.take(rows), device) if rows.size else None
        return cls(**parts)


def split_count(n: int, fraction: float, gen: torch.Generator) -> int:
    """round(n·fraction) with stochastic rounding; no random draw when n·fraction is an integer."""
    x = n * fraction
    lo = math.floor(x)
    if x == lo:
        return int(lo)
    return int(lo + (torch.rand((), generator=gen).item() < x - lo))


def _assemble(parts: list[tuple[str, ReplayBuffer | None, int]], gen: torch.Generator, lam: float | None) -> Batch:
    counts = dict.fromkeys(SOURCES, 0)
    gathered, mcs = [], []
    for name, buf, n in parts:
        if n > 0 and buf is not None:
            idx = buf.sample_index(n, gen)
            gathered.append(buf.gather(idx))
            mcs.append(None if buf.mc_returns is None else buf.mc_returns[idx])
            counts[name] += n
    fields = gathered[0] if len(gathered) == 1 else tuple(torch.cat(cols) for cols in zip(*gathered, strict=True))
    mc = torch.cat(mcs) if all(m is not None for m in mcs) else None
    return Batch(*fields, counts=counts, lam=lam, mc_returns=mc)


def sample_uniform(buffer: ReplayBuffer, batch_size: int, gen: torch.Generator, lam: float | None = None) -> Batch:
    """Offline pretraining: a plain uniform batch from one buffer."""
    return _assemble([("offline", buffer, batch_size)], gen, lam)


def round_buffers(
    paradigm: Paradigm,
    offline: Transitions,
    online_so_far: Transitions,
    online_capacity: int,
    new_rows: int,
    device: torch.device,
) -> tuple[ReplayBuffer, ReplayBuffer]:
    """(online, offline) buffers of an online round. The online ring holds the online rows so far;
    bernoulli's offline side is the dataset plus every online row (APL0 adds each to both)."""
    online = ReplayBuffer(online_capacity, offline.obs_dim, offline.act_dim, device)
    online.extend(online_so_far)
    if paradigm != "bernoulli":
        return online, ReplayBuffer.from_transitions(offline, device)
    side = ReplayBuffer(len(offline) + len(online_so_far) + new_rows, offline.obs_dim, offline.act_dim, device)
    side.extend(offline)
    side.extend(online_so_far)
    return online, side


class BatchMixer:
    """Draws mixed batches from online, offline and (optionally) synthetic buffers, and counts what
    it drew: rows per source (`drawn`) and, for bernoulli, batches per side (`sides`)."""

    def __init__(
        self,
        paradigm: Paradigm,
        batch_size: int,
        online: ReplayBuffer,
        offline: ReplayBuffer,
        synthetic: Synthetic | None = None,
        synthetic_ratio: float = 1 / 3,
        synthetic_online_fraction: float = 0.8,
        real_online_share: float = 0.5,
        p_online: float = 0.5,
        online_threshold: int = 0,
    ) -> None:
        self.paradigm, self.batch_size = paradigm, batch_size
        self.online, self.offline, self.synthetic = online, offline, synthetic
        self.synthetic_ratio = synthetic_ratio if synthetic is not None else 0.0
        self.synthetic_online_fraction = synthetic_online_fraction
        self.real_online_share = real_online_share
        self.p_online, self.online_threshold = p_online, online_threshold
        self.drawn = dict.fromkeys(SOURCES, 0)
        self.sides: dict[str, int] | None = {"online": 0, "offline": 0} if paradigm == "bernoulli" else None

    def add(self, obs: np.ndarray, act: np.ndarray, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
        """A new online row: into the online buffer and, for bernoulli, the offline side too."""
        self.online.add(obs, act, reward, next_obs, terminal)
        if self.paradigm == "bernoulli":
            self.offline.add(obs, act, reward, next_obs, terminal)

    def sample(self, gen: torch.Generator) -> Batch:
        batch = self._concat(gen) if self.paradigm == "concat" else self._bernoulli(gen)
        for k, v in batch.counts.items():
            self.drawn[k] += v
        if self.sides is not None:
            self.sides["offline" if batch.lam else "online"] += 1
        return batch

    def _concat(self, gen: torch.Generator) -> Batch:
        n_syn = split_count(self.batch_size, self.synthetic_ratio, gen)
        syn_on, syn_off = self._synthetic_split(n_syn, gen)
        n_real = self.batch_size - n_syn
        n_on = split_count(n_real, self.real_online_share, gen) if len(self.online) else 0
        parts = [("online", self.online, n_on), ("offline", self.offline, n_real - n_on)]
        return _assemble([*parts, *self._synthetic_parts(syn_on, syn_off)], gen, None)

    def _bernoulli(self, gen: torch.Generator) -> Batch:
        p = self.p_online if len(self.online) > self.online_threshold else 0.0
        online_side = bool(torch.rand((), generator=gen).item() < p)
        n_syn = split_count(self.batch_size, self.synthetic_ratio, gen) if self.synthetic is not None else 0
        syn_on, syn_off = self._synthetic_split(n_syn, gen)
        real = ("online", self.online) if online_side else ("offline", self.offline)
        parts = [(*real, self.batch_size - n_syn), *self._synthetic_parts(syn_on, syn_off)]
        return _assemble(parts, gen, 0.0 if online_side else 1.0)

    def _synthetic_split(self, n_syn: int, gen: torch.Generator) -> tuple[int, int]:
        """Paper 4.1: generated online:offline 8:2 in every batch's synthetic part, on either side."""
        if not n_syn:
            return 0, 0
        syn_on = split_count(n_syn, self.synthetic_online_fraction, gen)
        return _fit(self.synthetic.online, self.synthetic.offline, syn_on, n_syn - syn_on)

    def _synthetic_parts(self, syn_on: int, syn_off: int) -> list[tuple[str, ReplayBuffer | None, int]]:
        syn = self.synthetic
        return [("synthetic_online", syn and syn.online, syn_on), ("synthetic_offline", syn and syn.offline, syn_off)]


def _fit(on: ReplayBuffer | None, off: ReplayBuffer | None, n_on: int, n_off: int) -> tuple[int, int]:
    """Move synthetic draws to the other label when a store holds only one label."""
    if on is None:
        return 0, n_on + n_off
    if off is None:
        return n_on + n_off, 0
    return n_on, n_off
