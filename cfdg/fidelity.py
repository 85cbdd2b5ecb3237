"""Ground-truth fidelity of transitions: replay each row in the MuJoCo simulator (SynthER's "dynamics error").

For a row (s, a, r, s', done) the simulator is reset to the physical state behind s, steps a, and
its own s'_sim, r_sim and termination are compared with the row's. Real data scores ~0 by
construction, which is what the tests check; a generator scores by how physically possible its rows are.

How an observation maps back to a MuJoCo state (gymnasium MuJoCo v5, as `cfdg.envs` makes them):
- hopper / walker2d / halfcheetah: obs = (qpos[1:], qvel). qpos[0] (x) is absent; the dynamics are
  invariant to it, so it is set to 0. The forward reward is the x difference over dt, which is
  invariant too. hopper and walker2d clip the observed qvel to ±10: a row whose observed velocity
  sits at (or beyond) the bound hides the true velocity, so it is skipped and counted.
- ant: obs = (qpos[2:], qvel, cfrc_ext[1:]) (105 dims, v5's default; 27 without contact forces is
  accepted too). x and y are absent and set to 0. The contact forces in s are not part of the
  state (they are a by-product of the step that led to s), so they are not used to reset and not
  checked. The contact forces in s' ARE a deterministic function of (s, a) (computed after the
  step, from the simulated contacts), so the simulator reproduces them and they are compared like
  every other dimension; `next_state_rel_error_joints` gives the error on qpos/qvel alone beside it.
  Ant's reward is not exactly a function of (s, a): its forward term differences the torso's body
  `xpos`, which mj_step leaves at the last RK4 stage, so the "before" position of a live episode
  lags s's qpos by O(h²·acceleration) and depends on the previous action. Real rows therefore keep
  a small reward error (≈ 1e-4 relative on random-policy rows, at most ≈ 0.1 on a single row);
  hopper, walker2d and halfcheetah difference qpos[0] and are exact.
Each row starts from a freshly reset MjData (no solver warm-start carried from the previous row),
so a row's result does not depend on which rows precede it. Actions are applied as stored (MuJoCo
clamps ctrl to its range; the ctrl cost uses the raw action, as the env does).

Why a wrong reset fails the tests: the comparison is in observation space at float32 precision.
Any error in the qpos/qvel layout (a shifted index, a dropped velocity, a wrong frame of x) changes
s'_sim by O(dt · velocity) or more per dimension, which is the same order as s' − s itself, so the
relative error jumps from ~1e-6 to O(0.1–1); `tests/test_fidelity.py` shows it with deliberately
wrong resets.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from cfdg.envs import GYM_IDS
from cfdg.envs import env_name as short_env_name
from cfdg.errors import ConfigError, StoreError
from cfdg.store import Transitions

VELOCITY_CLIP = 10.0  # hopper/walker2d v5 _get_obs: np.clip(qvel, -10, 10)
CLIP_TOL = 1e-4  # float32 10.0 and anything that rounds to it counts as "at the bound"
SKIP_REASONS = ("velocity_clipped", "velocity_beyond_clip", "simulator_unstable")


@dataclasses.dataclass(frozen=True)
class ObsLayout:
    """Where qpos/qvel sit in an observation of one env."""

    env: str
    n_skipped: int  # leading qpos entries absent from the observation (x, or x and y)
    nq: int
    nv: int
    velocity_clip: float | None
    contact_dims: int  # trailing contact-force dims (ant), 0 elsewhere

    @property
    def obs_dim(self) -> int:
        return self.nq - self.n_skipped + self.nv + self.contact_dims

    @property
    def state_dims(self) -> int:
        """Leading observation dims that are qpos/qvel (the rest are contact forces)."""
        return self.nq - self.n_skipped + self.nv


StateFn = Callable[[np.ndarray, ObsLayout], tuple[np.ndarray, np.ndarray]]


def state_from_observation(obs: np.ndarray, layout: ObsLayout) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) in float64 for one observation; the absent x (and y) are 0."""
    n_obs_q = layout.nq - layout.n_skipped
    qpos = np.zeros(layout.nq)
    qpos[layout.n_skipped :] = obs[:n_obs_q]
    qvel = np.asarray(obs[n_obs_q : n_obs_q + layout.nv], dtype=np.float64)
    return qpos, qvel


def make_simulator(env: str, obs_dim: int) -> tuple[Any, ObsLayout]:
    """The unwrapped MuJoCo env for `env` with the observation layout of `obs_dim`-wide rows."""
    name = short_env_name(env)
    if name not in GYM_IDS:
        raise ConfigError(f"fidelity: env {env!r} has no simulator check; supported: {sorted(GYM_IDS)}")
    kwargs: dict[str, Any] = {}
    if name == "ant" and obs_dim == 27:
        kwargs["include_cfrc_ext_in_observation"] = False
    previous_handler = mujoco.get_mju_user_warning()
    # Ant's xml draws a deprecation notice from the MuJoCo compiler, which MuJoCo would also append
    # to MUJOCO_LOG.TXT in the working directory.
    mujoco.set_mju_user_warning(_quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = gym.make(GYM_IDS[name], **kwargs).unwrapped
    finally:
        mujoco.set_mju_user_warning(previous_handler)
    sim.reset(seed=0)
    n_skipped = 2 if name == "ant" else 1
    nq, nv = int(sim.model.nq), int(sim.model.nv)
    want = int(sim.observation_space.shape[0])
    layout = ObsLayout(
        env=name,
        n_skipped=n_skipped,
        nq=nq,
        nv=nv,
        velocity_clip=VELOCITY_CLIP if name in ("hopper", "walker2d") else None,
        contact_dims=want - (nq - n_skipped + nv),
    )
    if obs_dim != want:
        raise StoreError(
            f"fidelity: {name} observations have {want} dims in {GYM_IDS[name]}"
            f"{' (or 27 without contact forces)' if name == 'ant' else ''}; the rows have {obs_dim}"
        )
    return sim, layout


def skip_reason(obs: np.ndarray, layout: ObsLayout) -> str | None:
    """Why a row's state cannot be reset exactly from its observation, or None."""
    if layout.velocity_clip is None:
        return None
    n_obs_q = layout.nq - layout.n_skipped
    speed = np.abs(obs[n_obs_q : n_obs_q + layout.nv]).max()
    if speed > layout.velocity_clip + CLIP_TOL:
        return "velocity_beyond_clip"  # not an observation the env can emit (generated rows only)
    if speed >= layout.velocity_clip - CLIP_TOL:
        return "velocity_clipped"
    return None


def simulate_rows(
    sim: Any, layout: ObsLayout, obs: np.ndarray, actions: np.ndarray, to_state: StateFn = state_from_observation
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """(s'_sim, r_sim, terminated_sim, skip reason or None) per row; skipped rows hold zeros."""
    n = len(obs)
    next_obs = np.zeros((n, layout.obs_dim))
    rewards = np.zeros(n)
    terminated = np.zeros(n, dtype=bool)
    reasons: list[str | None] = []
    previous_handler = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_quiet)  # counted as a skip reason instead of one stderr line per row
    try:
        for i in range(n):
            reason = skip_reason(obs[i], layout)
            if reason is None:
                mujoco.mj_resetData(sim.model, sim.data)  # no warm-start or warning carried across rows
                qpos, qvel = to_state(obs[i].astype(np.float64), layout)
                sim.set_state(qpos, qvel)
                o, r, term, _, _ = sim.step(actions[i].astype(np.float64))
                if any(sim.data.warning[w].number for w in _UNSTABLE) or not np.isfinite(o).all():
                    reason = "simulator_unstable"  # MuJoCo reset itself mid-step: s'_sim is meaningless
                else:
                    next_obs[i], rewards[i], terminated[i] = o, r, term
            reasons.append(reason)
    finally:
        mujoco.set_mju_user_warning(previous_handler)
    return next_obs, rewards, terminated, reasons


def _quiet(message: str) -> None:
    del message


# MuJoCo's "Nan, Inf or huge value" warnings: the step was not simulated (MuJoCo resets the data).
_UNSTABLE = tuple(
    int(w)
    for w in (
        mujoco.mjtWarning.mjWARN_BADQPOS,
        mujoco.mjtWarning.mjWARN_BADQVEL,
        mujoco.mjtWarning.mjWARN_BADQACC,
        mujoco.mjtWarning.mjWARN_BADCTRL,
    )
)


def simulator_fidelity(
    transitions: Transitions,
    env_name: str,
    max_rows: int = 2000,
    seed: int = 0,
    to_state: StateFn = state_from_observation,
) -> dict[str, Any]:
    """Compare up to `max_rows` seeded-sampled rows with the simulator; deterministic for a seed.

    Returns (errors over the checked rows only, pooled over rows and dimensions):
    - next_state_rel_error: MSE(s', s'_sim) / MSE(s, s'_sim) (0 exact, 1 no better than copying s);
    - next_state_mse, copy_mse (the denominator), and for ant next_state_rel_error_joints (qpos/qvel dims);
    - reward_rel_error: MSE(r, r_sim) / Var(r_sim) (reward_mse beside it);
    - termination_agreement: share of rows whose `terminals` equals the simulator's termination;
    - rows_sampled, rows_checked, rows_skipped {reason: count}, share_checked.
    Numbers only (DVC metrics); the error keys are absent when no row could be checked.
    `to_state` exists so tests can plug in a wrong reset.
    """
    if max_rows <= 0:
        raise ConfigError(f"fidelity: max_rows must be positive, got {max_rows}")
    n_total = len(transitions)
    if n_total == 0:
        raise StoreError("fidelity: the transitions are empty")
    sim, layout = make_simulator(env_name, transitions.obs_dim)
    if transitions.act_dim != int(sim.action_space.shape[0]):
        raise StoreError(
            f"fidelity: {layout.env} actions have {sim.action_space.shape[0]} dims; the rows have {transitions.act_dim}"
        )
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n_total, min(n_total, max_rows), replace=False))
    rows = transitions.take(idx)
    s_sim, r_sim, t_sim, reasons = simulate_rows(sim, layout, rows.observations, rows.actions, to_state)
    sim.close()

    ok = np.array([r is None for r in reasons], dtype=bool)
    skipped = {k: sum(r == k for r in reasons) for k in SKIP_REASONS}
    out: dict[str, Any] = {
        "rows_sampled": len(idx),
        "rows_checked": int(ok.sum()),
        "rows_skipped": skipped,
        "share_checked": float(ok.mean()),
    }
    if not ok.any():
        return out
    s = rows.observations[ok].astype(np.float64)
    s_next = rows.next_observations[ok].astype(np.float64)
    sim_next = s_sim[ok]
    err = (s_next - sim_next) ** 2
    copy = (s - sim_next) ** 2
    r_err = (rows.rewards[ok].astype(np.float64) - r_sim[ok]) ** 2
    out |= {
        "next_state_rel_error": _ratio(err.mean(), copy.mean()),
        "next_state_mse": float(err.mean()),
        "copy_mse": float(copy.mean()),
        "reward_rel_error": _ratio(r_err.mean(), r_sim[ok].var()),
        "reward_mse": float(r_err.mean()),
        "termination_agreement": float(np.mean(rows.terminals[ok] == t_sim[ok])),
    }
    if layout.contact_dims:
        d = layout.state_dims
        out["next_state_rel_error_joints"] = _ratio(err[:, :d].mean(), copy[:, :d].mean())
    return out


def _ratio(num: float, den: float) -> float:
    """num / den, with a floor on den so a degenerate sample (one row, constant rewards) stays finite."""
    return float(num / max(den, 1e-12))
