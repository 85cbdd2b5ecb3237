"""The agents' parameters: `AgentConfig` (params `agent:`), `PretrainConfig` (`pretrain:`) and
`RolloutConfig` (`rollout:`, one online round), with the public implementations' defaults.

Defaults follow CORL (IQL for locomotion, Cal-QL) and APL0 (TD3/TD3+BC); the paper presets use the
PEX repository's values and APL0's GCQL (docs/paper-settings.md). AntMaze runs set `iql_tau: 0.9`, `iql_beta: 10` and
`reward_shift: -1` in params.yaml.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from cfdg.config import check

Algo = Literal["iql", "pex", "apl", "calql"]
AplEngine = Literal["td3bc", "cql"]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    algo: Algo = "iql"
    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    discount: float = 0.99
    target_rate: float = 0.005  # soft target update rate (Polyak)
    batch_size: int = 256
    normalize_obs: bool = True  # CORL IQL / TD3+BC standardise states with offline statistics
    reward_scale: float = 1.0
    reward_shift: float = 0.0  # -1 for AntMaze (IQL's r - 1)
    # IQL / PEX
    iql_tau: float = 0.7  # expectile
    iql_beta: float = 3.0  # inverse temperature of advantage weighting
    exp_adv_max: float = 100.0
    actor_cosine: bool = True  # cosine decay of the actor lr over the offline steps (online: constant)
    # Log-std clamp of the IQL/PEX Gaussian policy and of APL's CQL policy. −20: CORL's IQL; PEX
    # (pex/networks/policy.py) and APL0's rlkit policy (rlkit_cql/torch/sac/policies.py) use −5.
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    actor_dropout: float = 0.0  # dropout after each hidden layer of the IQL/PEX actor (Adroit: 0.1)
    # PEX
    inv_temperature: float = 10.0
    pex_eval_eps: float = 0.1  # eval: greedy with prob 1 - eps (PEX's epsilon_greedy_sample)
    # APL: the agent that carries the λ switch (paper eq. 2-3). `td3bc`: TD3 online, TD3+BC offline,
    # APL0 agents/td3_bc_gc.py (the CPU studies run it). `cql`: CQL whose conservative term is
    # skipped on online batches, APL0 agents/GCQL.py, the engine APL0's config/exp.yaml names
    # (configs/paper/apl.yaml). Checkpoints record the engine and load only as it.
    apl_engine: AplEngine = "td3bc"
    apl_critics: int = 5  # APL's CQL: Q ensemble size (GCQL: 5; each TD target is the min of 2 random heads)
    # APL's TD3+BC engine
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    expl_noise: float = 0.1
    bc_alpha: float = 2.5
    # Cal-QL (CQL with calibrated lower bound); CORL cal_ql.py TrainConfig defaults. APL's CQL engine
    # reads cql_alpha (its λ = 1 weight), cql_n_actions, cql_temp, cql_importance_sample, cql_policy_lr.
    cql_alpha: float = 10.0  # weight of the conservative term offline
    cql_alpha_online: float = 10.0  # ... and while fine-tuning
    cql_n_actions: int = 10  # sampled actions per state in the log-sum-exp
    cql_temp: float = 1.0
    cql_importance_sample: bool = True
    cql_lagrange: bool = False  # tune the conservative weight towards cql_target_action_gap
    cql_target_action_gap: float = -1.0
    cql_max_target_backup: bool = False  # TD target: max over cql_n_actions sampled next actions
    cql_clip_diff_min: float | None = None  # clip of the CQL gap; None: no clip (CORL: -inf)
    cql_clip_diff_max: float | None = None
    cql_policy_lr: float = 3e-5  # actor and SAC temperature lr (critics use `lr`)
    cql_auto_alpha: bool = True  # tune SAC's temperature to entropy -|A|
    cql_alpha_multiplier: float = 1.0
    cql_backup_entropy: bool = False
    cql_bc_steps: int = 0  # first gradient steps clone the data's actions
    cql_orthogonal_init: bool = True
    cql_actor_layers: int = 3  # hidden layers of width hidden_dims[0] (CORL: 3 x 256)
    cql_q_layers: int = 2  # CORL q_n_hidden_layers (AntMaze 5, Adroit 3)
    calql_sparse_mc: bool = False  # CORL is_sparse_reward: failed episodes get r/(1-γ) (AntMaze)
    # execution
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    fused_adam: bool = True  # one fused/foreach Adam kernel over all parameters

    def __post_init__(self) -> None:
        w = "agent"
        check(len(self.hidden_dims) >= 1 and all(h > 0 for h in self.hidden_dims), w, "hidden_dims must be positive")
        check(self.lr > 0, f"{w}.lr", f"must be > 0, got {self.lr}")
        check(0 < self.discount <= 1, f"{w}.discount", f"must be in (0, 1], got {self.discount}")
        check(0 < self.target_rate <= 1, f"{w}.target_rate", f"must be in (0, 1], got {self.target_rate}")
        check(self.batch_size >= 2, f"{w}.batch_size", f"must be >= 2, got {self.batch_size}")
        check(0 < self.iql_tau < 1, f"{w}.iql_tau", f"must be in (0, 1), got {self.iql_tau}")
        check(self.iql_beta >= 0, f"{w}.iql_beta", f"must be >= 0, got {self.iql_beta}")
        check(self.exp_adv_max > 0, f"{w}.exp_adv_max", f"must be > 0, got {self.exp_adv_max}")
        check(self.inv_temperature >= 0, f"{w}.inv_temperature", f"must be >= 0, got {self.inv_temperature}")
        check(0 <= self.pex_eval_eps <= 1, f"{w}.pex_eval_eps", f"must be in [0, 1], got {self.pex_eval_eps}")
        check(self.policy_delay >= 1, f"{w}.policy_delay", f"must be >= 1, got {self.policy_delay}")
        check(self.noise_clip >= 0 and self.policy_noise >= 0, w, "policy_noise and noise_clip must be >= 0")
        check(self.expl_noise >= 0, f"{w}.expl_noise", f"must be >= 0, got {self.expl_noise}")
        check(self.apl_critics >= 2, f"{w}.apl_critics", f"must be >= 2 (targets take 2), got {self.apl_critics}")
        check(self.bc_alpha > 0, f"{w}.bc_alpha", f"must be > 0, got {self.bc_alpha}")
        check(self.log_std_min < self.log_std_max, w, "log_std_min must be < log_std_max")
        check(0 <= self.actor_dropout < 1, f"{w}.actor_dropout", f"must be in [0, 1), got {self.actor_dropout}")
        check(self.cql_alpha >= 0, f"{w}.cql_alpha", f"must be >= 0, got {self.cql_alpha}")
        check(self.cql_alpha_online >= 0, f"{w}.cql_alpha_online", f"must be >= 0, got {self.cql_alpha_online}")
        check(self.cql_n_actions >= 1, f"{w}.cql_n_actions", f"must be >= 1, got {self.cql_n_actions}")
        check(self.cql_temp > 0, f"{w}.cql_temp", f"must be > 0, got {self.cql_temp}")
        check(self.cql_policy_lr > 0, f"{w}.cql_policy_lr", f"must be > 0, got {self.cql_policy_lr}")
        check(self.cql_bc_steps >= 0, f"{w}.cql_bc_steps", f"must be >= 0, got {self.cql_bc_steps}")
        check(self.cql_actor_layers >= 1, f"{w}.cql_actor_layers", f"must be >= 1, got {self.cql_actor_layers}")
        check(self.cql_q_layers >= 1, f"{w}.cql_q_layers", f"must be >= 1, got {self.cql_q_layers}")
        lo, hi = self.cql_clip_diff_min, self.cql_clip_diff_max
        check(lo is None or hi is None or lo < hi, f"{w}.cql_clip_diff_min", "must be < cql_clip_diff_max")


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
