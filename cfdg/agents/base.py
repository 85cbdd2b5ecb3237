"""The agent shell every agent shares: device, observation normaliser, state, random draws, and the
class attributes that say how the loop treats an agent (its config, batch paradigm, online buffer,
the envs it runs on), so `train.run_round` is the loop only and never asks which agent it runs.

Every random draw of an agent comes from a CPU `torch.Generator` passed in by the loop, so the
same seed gives the same actions on every device and a checkpointed generator resumes them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch

from cfdg.agents.config import AgentConfig
from cfdg.device import autocast
from cfdg.errors import CheckpointError

Mode = Literal["explore", "eval"]
Paradigm = Literal["concat", "bernoulli"]


def noise(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise from a CPU generator: identical streams on every device."""
    return torch.randn(shape, generator=gen).to(device)


def uniform(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen)


class Agent:
    """Shell shared by every agent: device, observation normaliser, state (de)serialisation.

    Subclasses list their modules in `_modules`, optimisers in `_optims` and lr schedulers in
    `_schedulers` (all checkpointed), and implement
    `update(batch) -> dict[str, Tensor]` (metrics stay on the device: no host sync) and
    `act(obs, mode, gen) -> np.ndarray`.

    `paradigm` is how an online round mixes its batches (paper 2.2 / 3.3): "concat" draws every
    batch from online ⊕ offline ⊕ synthetic; "bernoulli" flips a coin per batch between the
    online and the offline side (APL's λ), and its offline side also receives every online row.
    `online_buffer` is the online buffer's capacity (None: keep every online row).
    `config_class` is the agent's own config (the `agent:` keys it reads); `supports(env)` says
    whether it runs on an env (`runs_on` in words); `form(cfg)` the class to build for a config.
    `needs_mc_returns`: its offline batches carry Monte-Carlo returns (Cal-QL's calibration).
    `engine` names the form of an algorithm that has several (APL: "td3bc" or "cql"); the state
    records it and loads only into the same form (`legacy_engine`: what a state without it is).
    """

    algo: ClassVar[str] = "base"
    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    engine: ClassVar[str | None] = None
    legacy_engine: ClassVar[str | None] = None
    paradigm: ClassVar[Paradigm] = "concat"
    online_buffer: ClassVar[int | None] = None
    needs_mc_returns: ClassVar[bool] = False
    runs_on: ClassVar[str] = "every env"
    _modules: tuple[str, ...] = ()
    _optims: tuple[str, ...] = ()
    _schedulers: tuple[str, ...] = ()  # lr schedulers; loaded after the optimisers they drive

    @classmethod
    def supports(cls, env: str) -> bool:
        """Whether this agent runs on `env`."""
        return True

    @classmethod
    def form(cls, cfg: AgentConfig) -> type[Agent]:
        """The class that `cfg` builds: this one, or for an algorithm with several forms the one it names."""
        return cls

    def __init__(self, cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.max_action, self.device = float(max_action), device
        self.obs_mean = torch.zeros(obs_dim, device=device)
        self.obs_std = torch.ones(obs_dim, device=device)
        self.phase = "offline"
        self.grad_steps = 0
        self.offline_steps_total = 0  # length of the actor's cosine schedule

    # --- data ------------------------------------------------------------------------------
    def set_obs_stats(self, observations: np.ndarray) -> None:
        """Standardise with offline-data statistics (CORL/TD3+BC); identity when disabled."""
        if self.cfg.normalize_obs:
            self.obs_mean = torch.as_tensor(observations.mean(0), dtype=torch.float32, device=self.device)
            self.obs_std = torch.as_tensor(observations.std(0) + 1e-3, dtype=torch.float32, device=self.device)

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def reward(self, r: torch.Tensor) -> torch.Tensor:
        return r * self.cfg.reward_scale + self.cfg.reward_shift

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return self.norm(torch.as_tensor(obs, dtype=torch.float32).to(self.device))

    def autocast(self):
        return autocast(self.device, self.cfg.precision)

    def random_action(self, gen: torch.Generator) -> np.ndarray:
        return ((uniform((self.act_dim,), gen) * 2 - 1) * self.max_action).numpy()

    # --- phases ----------------------------------------------------------------------------
    def start_online(self) -> None:
        """Switch from offline pretraining to online fine-tuning (PEX expands its policy here)."""
        self.phase = "online"

    # --- state -----------------------------------------------------------------------------
    def _stateful(self) -> tuple[str, ...]:
        return self._modules + self._optims + self._schedulers

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in self._stateful()}
        state.update(
            obs_mean=self.obs_mean.cpu(),
            obs_std=self.obs_std.cpu(),
            phase=self.phase,
            grad_steps=self.grad_steps,
            offline_steps_total=self.offline_steps_total,
        )
        if self.engine is not None:
            state["engine"] = self.engine
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("engine", self.legacy_engine)
        if saved != self.engine:
            raise CheckpointError(
                f"checkpoint state is of engine {saved or 'none'}, this {self.algo} agent's is {self.engine or 'none'}"
            )
        if state["phase"] == "online" and self.phase != "online":
            self.start_online()  # builds the online-only parts (PEX) before weights are loaded
        for name in self._stateful():
            if name not in state:
                raise CheckpointError(f"checkpoint has no '{name}' for a {self.algo} agent")
            try:
                getattr(self, name).load_state_dict(state[name])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"checkpoint '{name}' does not fit this {self.algo} agent: {e}") from e
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self.phase = state["phase"]
        self.grad_steps = int(state["grad_steps"])
        self.offline_steps_total = int(state["offline_steps_total"])
