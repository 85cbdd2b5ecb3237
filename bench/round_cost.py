"""What one round costs, stage by stage and phase by phase, and what a cheaper setting does to quality.

The agent's own stage (rollout) is the yardstick: the paper's overhead is +15% (APL) to +25% (IQL)
wall time, and the generator's stages (fit + materialise) should cost no more than the rollout at
the default budget and half of it at the study's. For each finished project given (the default run,
a study cell), round k's (default 2: a warm-started round) stages are re-run from its own inputs
into a temporary folder (the project is only read):

- rollout@k once, as the pipeline runs it;
- fit@k and materialise@k with the project's settings ("before") and with `--after` overrides,
  each for `--seeds` seeds (the generator's seed; same round data), split into fit, sampling,
  store writes and quality measurement;
- process and DVC start-up per stage: `python -m stages.<stage> --help` (interpreter, torch and the
  stage's imports) plus `dvc repro --dry <stage>@k` in the project (DVC's start-up and its check of
  every stage up to this one, which runs nothing).

Quality of the online-labelled generated rows, mean and sample std over the seeds: next-state
relative error in the simulator, and the state JS divergence to round k+1's fresh online rows (the
data the agent meets next, which no generator saw).

    python bench/round_cost.py --default /path/to/default-run --study /path/to/study-cell --json

The last line (with --json) is one JSON object: `<budget>.method_over_rollout` (after),
`<budget>.method_over_rollout_before`, the phases, and `quality.<measure>.{before, after,
before_std, after_std}` (the study budget's, or the only budget given).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfdg import store  # noqa: E402
from cfdg.agents.config import RolloutConfig  # noqa: E402
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig  # noqa: E402
from cfdg.diffusion.sample import sample_to_store  # noqa: E402
from cfdg.diffusion.variants.registry import get_variant  # noqa: E402
from cfdg.envs import env_name  # noqa: E402
from cfdg.fidelity import simulator_fidelity  # noqa: E402
from cfdg.quality import QualityConfig, js_divergences, measure_quality  # noqa: E402
from stages import layout, params  # noqa: E402
from stages.fit import fit_stage  # noqa: E402
from stages.rollout import rollout_stage  # noqa: E402

MEASURES = ("next_state_rel_error", "state_js_fresh")


@dataclasses.dataclass
class Settings:
    """One configuration of the generator's stages, as the stages read it from params.yaml."""

    diffusion: DiffusionConfig
    sampling: SamplingConfig
    quality: QualityConfig


def settings(raw: Mapping[str, Any], overrides: Sequence[str], where: str) -> Settings:
    """The project's sections with `section.key=value` overrides (values parsed as YAML)."""
    raw = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2:
            raise SystemExit(f"round_cost: --after {item!r}: expected section.key=value")
        node = raw.setdefault(parts[0], {})
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return Settings(
        params.section(raw, "diffusion", DiffusionConfig, where),
        params.section(raw, "sampling", SamplingConfig, where),
        params.section(raw, "quality", QualityConfig, where),
    )


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def startup_s(project: Path, stage: str, k: int) -> float:
    """Wall seconds a stage pays besides its work: the Python process with its imports, and DVC's check
    of every stage up to it (`dvc repro --dry`, which runs nothing), as `cfdg run` pays them per stage."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    _, py = timed(lambda: subprocess.run([sys.executable, "-m", f"stages.{stage}", "--help"], cwd=ROOT, env=env,
                                         capture_output=True, check=True))  # fmt: skip
    _, dvc = timed(lambda: subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry", f"{stage}@{k}"], cwd=project,
                                          capture_output=True, check=False))  # fmt: skip
    return py + dvc


def generator_round(project: Path, k: int, s: Settings, seed: int, tmp: Path) -> dict[str, Any]:
    """fit@k and materialise@k of `project` with settings `s` and generator seed `seed`, into `tmp`."""
    rd, prev = project / layout.round_dir(k), project / layout.round_dir(k - 1)
    offline, online = project / layout.OFFLINE, rd / layout.ONLINE
    model_path = tmp / f"diffusion-{seed}.pt"
    _, fit_s = timed(
        lambda: fit_stage(
            offline,
            online,
            s.diffusion,
            seed,
            k,
            model_path,
            progress=False,
            prev_model=prev / layout.DIFFUSION,
            agent=rd / layout.AGENT,
        )
    )
    variant = get_variant(s.diffusion.variant)
    model = variant.load(model_path)
    attrs = store.read_attrs(online)
    meta = store.StoreMeta(kind="synthetic", env_id=attrs["env_id"], source="bench", round=k, seed=seed)
    out = tmp / f"synthetic-{seed}.zarr"
    _, sample_write_s = timed(
        lambda: sample_to_store(model, variant, out, meta, seed=seed, sampling=s.sampling, progress=False)
    )
    generated, _ = store.read_store(out)
    _, write_s = timed(lambda: store.write_store(tmp / f"rewrite-{seed}.zarr", generated, meta))
    quality, quality_s = timed(lambda: measure_quality(offline, online, out, s.quality, k))
    return {
        "phases": {
            "fit": fit_s,
            "sampling": sample_write_s - write_s,
            "store writes": write_s,
            "quality measurement": quality_s,
        },
        "generated": generated.take(generated.labels == store.LABEL_ONLINE),
        "env": env_name(attrs["env_id"]),
        "quality": quality,
    }


def fresh_rows(project: Path, k: int) -> store.Transitions:
    """Round k+1's new online rows: what the agent meets next, unseen by round k's generator."""
    seen = int(store.read_attrs(project / layout.round_dir(k) / layout.ONLINE)["counts"]["rows"])
    later, _ = store.read_store(project / layout.round_dir(k + 1) / layout.ONLINE)
    return later.take(slice(seen, len(later)))


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (n − 1); NaN where a seed's rows could not be checked at all."""
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else math.nan)


def budget(project: Path, k: int, after: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """One budget's round cost (before / after) and quality over seeds."""
    where = str(project / "params.yaml")
    for need in (layout.round_dir(k + 1) / layout.ONLINE, layout.round_dir(k - 1) / layout.DIFFUSION):
        if not (project / need).exists():
            raise SystemExit(
                f"round_cost: {project / need} is missing; --round {k} needs rounds {k - 1}-{k + 1} finished"
            )
    raw = params.read_params(project / "params.yaml")
    before_s, after_s = settings(raw, [], where), settings(raw, after, where)
    fresh = fresh_rows(project, k)
    out: dict[str, Any] = {"project": str(project), "round": k, "fresh_rows": len(fresh)}
    with tempfile.TemporaryDirectory(prefix="round-cost-") as tmp_s:
        tmp = Path(tmp_s)
        rollout_cfg = params.section(raw, "rollout", RolloutConfig, where)
        _, rollout = timed(
            lambda: rollout_stage(
                project / layout.round_dir(k - 1),
                project / layout.OFFLINE,
                k,
                rollout_cfg,
                tmp / "rollout",
                progress=False,
            )
        )
        start = {stage: startup_s(project, stage, k) for stage in ("rollout", "fit", "materialise")}
        out["rollout_s"] = rollout + start["rollout"]
        out["startup_s"] = start
        for label, s in (("before", before_s), ("after", after_s)):
            runs = []
            for seed in seeds:
                r = generator_round(project, k, s, seed, tmp / f"{label}-{seed}")
                fid = simulator_fidelity(r["generated"], r["env"], max_rows=s.quality.fidelity_rows, seed=0)
                js = js_divergences(fresh, r["generated"], seed=0, max_rows=s.quality.max_rows)
                runs.append(
                    {
                        **r["phases"],
                        "next_state_rel_error": fid.get("next_state_rel_error", math.nan),
                        "share_checked": fid["share_checked"],
                        "state_js_fresh": js["state"]["classifier"],
                    }
                )
            phases = {p: statistics.fmean(r[p] for r in runs) for p in runs[0] if p not in (*MEASURES, "share_checked")}
            phases["start-up (fit, materialise)"] = start["fit"] + start["materialise"]
            method = sum(phases.values())
            out[label] = {
                "phases": phases,
                "method_s": method,
                "method_over_rollout": method / out["rollout_s"],
                "quality": {
                    m: dict(zip(("mean", "std"), mean_std([r[m] for r in runs]), strict=True)) for m in MEASURES
                },
                "per_seed": runs,
            }
    out["method_over_rollout"] = out["after"]["method_over_rollout"]
    out["method_over_rollout_before"] = out["before"]["method_over_rollout"]
    return out


def table(name: str, b: Mapping[str, Any]) -> str:
    rows = [f"### {name}: round {b['round']} of {b['project']}", "",
            "| Phase | Before (s) | After (s) |", "|---|---:|---:|"]  # fmt: skip
    for p in b["before"]["phases"]:
        rows.append(f"| {p} | {b['before']['phases'][p]:.1f} | {b['after']['phases'][p]:.1f} |")
    rows.append(f"| fit + materialise | {b['before']['method_s']:.1f} | {b['after']['method_s']:.1f} |")
    rows.append(f"| rollout (yardstick, with its start-up) | {b['rollout_s']:.1f} | {b['rollout_s']:.1f} |")
    rows.append(
        f"| (fit + materialise) / rollout | {b['method_over_rollout_before']:.2f} | {b['method_over_rollout']:.2f} |"
    )
    for m in MEASURES:
        q0, q1 = b["before"]["quality"][m], b["after"]["quality"][m]
        rows.append(
            f"| {m} (mean ± sample std) | {q0['mean']:.3f} ± {q0['std']:.3f} | {q1['mean']:.3f} ± {q1['std']:.3f} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", type=Path, help="a finished default run (`cfdg run` on params.yaml's defaults)")
    ap.add_argument("--study", type=Path, help="a finished study cell (e.g. studies/cheetah-random/cells/<cell>)")
    ap.add_argument("--round", type=int, default=2, help="the round to re-run (needs round+1 finished)")
    ap.add_argument("--after", nargs="*", default=["diffusion.precision=auto", "sampling.precision=auto"],
                    help="section.key=value overrides of the cheaper setting")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()
    projects = {name: p for name, p in (("default", args.default), ("study", args.study)) if p is not None}
    if not projects:
        ap.error("give --default and/or --study")
    result: dict[str, Any] = {
        "after": args.after,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    for name, project in projects.items():
        result[name] = budget(project.resolve(), args.round, args.after, list(range(args.seeds)))
        print(table(name, result[name]), flush=True)
    q = result["study" if "study" in result else "default"]
    result["quality"] = {
        m: {
            "before": q["before"]["quality"][m]["mean"],
            "after": q["after"]["quality"][m]["mean"],
            "before_std": q["before"]["quality"][m]["std"],
            "after_std": q["after"]["quality"][m]["std"],
        }
        for m in MEASURES
    }
    if args.json:
        for b in projects:
            for label in ("before", "after"):
                for r in result[b][label]["per_seed"]:
                    r.pop("generated", None)
        print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
