"""The agents' parameters every agent shares: `AgentConfig` (the keys of params `agent:` that every
agent reads), `PretrainConfig` (`pretrain:`) and `RolloutConfig` (`rollout:`, one online round).

Each agent module extends `AgentConfig` with its own algorithm's keys (`IQLConfig` in iql.py,
`TD3Config` in td3.py, ...), as each CORL file holds its own config; `registry.agent_config` parses
an `agent:` section into the one `agent.algo` names. This module sits below the registry and knows
no agent. Defaults follow CORL (IQL for locomotion, Cal-QL) and APL0 (TD3/TD3+BC); the paper presets
use the PEX repository's values and APL0's GCQL (docs/paper-settings.md).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from cfdg.config import check


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """The keys every agent reads; an agent's own config adds its algorithm's keys."""

    algo: str = ""  # each agent's config sets its own name here
    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    discount: float = 0.99
    target_rate: float = 0.005  # soft target update rate (Polyak)
    batch_size: int = 256
    normalize_obs: bool = True  # CORL IQL / TD3+BC standardise states with offline statistics
    reward_scale: float = 1.0
    reward_shift: float = 0.0  # -1 for AntMaze (IQL's r - 1)
    # execution
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    fused_adam: bool = True  # one fused/foreach Adam kernel over all parameters

    def __post_init__(self) -> None:
        w = "agent"
        own = next(f.default for f in dataclasses.fields(self) if f.name == "algo")
        check(self.algo == own, f"{w}.algo", f"{self.algo!r} given to {type(self).__name__}, the config of {own!r}")
        check(len(self.hidden_dims) >= 1 and all(h > 0 for h in self.hidden_dims), w, "hidden_dims must be positive")
        check(self.lr > 0, f"{w}.lr", f"must be > 0, got {self.lr}")
        check(0 < self.discount <= 1, f"{w}.discount", f"must be in (0, 1], got {self.discount}")
        check(0 < self.target_rate <= 1, f"{w}.target_rate", f"must be in (0, 1], got {self.target_rate}")
        check(self.batch_size >= 2, f"{w}.batch_size", f"must be >= 2, got {self.batch_size}")


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
class RolloutConfig:
    # Old key -> its name now; the old one still reads, with one warning (cfdg.config.renamed_keys).
    RENAMED: ClassVar[dict[str, str]] = {"synthetic_online_share": "synthetic_online_fraction"}

    steps: int = 100_000  # env steps per round
    utd: int = 1  # gradient steps per env step
    # Explore/train cycles: after every `train_every` env steps, utd·train_every gradient steps.
    # 1 interleaves one env step with utd updates (PEX repo); APL0 (off_on_interleave.py) runs
    # 1000 env steps, then 10,000 updates: train_every 1000, utd 10.
    train_every: int = 1
    warmup_steps: int = 5_000  # online rows needed before gradient steps start (PEX: 5000)
    random_steps: int = 0  # first online env steps taken with uniform random actions
    eval_every: int = 0  # env steps; 0: evaluate only at the end of the round
    eval_episodes: int = 10
    eval_seed: int = 10_000
    synthetic_ratio: float = 1 / 3  # r: share of each batch that is synthetic
    synthetic_online_fraction: float = 0.8  # fraction of the synthetic part drawn online-labelled (8:2)
    real_online_share: float = 0.5  # concat paradigm: share of the real part that is online
    p_online: float = 0.5  # bernoulli paradigm (APL): P(online-side batch)
    online_threshold: int = 10_000  # APL: online batches only once the online buffer holds more
    online_buffer_size: int | None = None  # None: the agent's own (APL 20,000 FIFO, IQL/PEX every row)
    chunk_rows: int = 10_000  # online store chunking; must divide `steps`
    log_every: int = 1_000
    threads: int = 0  # torch intra-op threads while training; 0 leaves torch's setting

    def __post_init__(self) -> None:
        w = "rollout"
        check(self.threads >= 0, f"{w}.threads", f"must be >= 0, got {self.threads}")
        check(self.steps >= 1, f"{w}.steps", f"must be >= 1, got {self.steps}")
        check(self.utd >= 1, f"{w}.utd", f"must be >= 1, got {self.utd}")
        check(self.train_every >= 1, f"{w}.train_every", f"must be >= 1, got {self.train_every}")
        check(self.warmup_steps >= 1, f"{w}.warmup_steps", f"must be >= 1, got {self.warmup_steps}")
        check(self.random_steps >= 0, f"{w}.random_steps", f"must be >= 0, got {self.random_steps}")
        check(self.eval_every >= 0, f"{w}.eval_every", f"must be >= 0, got {self.eval_every}")
        check(self.eval_episodes >= 1, f"{w}.eval_episodes", f"must be >= 1, got {self.eval_episodes}")
        for name in ("synthetic_ratio", "synthetic_online_fraction", "real_online_share", "p_online"):
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
