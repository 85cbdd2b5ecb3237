"""The paper's Table 6 on a lent GPU, in one run of at most 8 minutes: kernels at paper size and one
shortened round of the paper's APL preset end to end. Run through `bench/gpu.sh` (see there).

Kernels (configs/paper/*.yaml sizes: denoiser 1024 wide x 6 deep, the agents' own networks):
- diffusion fit steps/s: the library's `fit_diffusion`, timed as the difference of a short and a
  long fit, so the first step (and torch.compile's compilation) is not charged to the rate;
- sampled rows/s: one full sampler batch of the preset's sampler (128 guided stochastic Heun steps,
  `sample_vectors`), after a 2-step warm-up that also compiles;
- agent update ms: the preset's agent (iql, pex, apl), online phase, after a warm-up.
Each for fp32, bf16 and bf16 + torch.compile where the library supports it (the denoiser, on CUDA
only; the agents have no compile option). Peak GPU memory per measurement is Table 6's other column.

The round: a fresh project (`dvc init --no-scm`), the paper's APL preset with `rounds: 1`, then a
budget preset that shortens it (recorded in the output), and `dvc repro` of each stage in turn,
timed from outside (process start-up included). Results are written after every measurement, so a
run stopped early still leaves what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.diffusion import timed  # noqa: E402
from cfdg.agents.registry import agent_config, make_agent  # noqa: E402
from cfdg.agents.replay import ReplayBuffer, sample_uniform  # noqa: E402
from cfdg.config import from_mapping  # noqa: E402
from cfdg.device import select_device  # noqa: E402
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig  # noqa: E402
from cfdg.diffusion.sample import label_pattern, sample_vectors  # noqa: E402
from cfdg.diffusion.variants.registry import get_variant  # noqa: E402
from cfdg.fake_data import make_transitions  # noqa: E402
from pipeline.preset import apply_preset  # noqa: E402

OBS, ACT = 17, 6  # HalfCheetah, the round's dataset: the kernels see the same row width
PAPER = ROOT / "configs" / "paper"
ROUND_STAGES = ("dataset", "pretrain", "rollout@1", "fit@1", "materialise@1")
PROJECT_FILES = ("cfdg", "stages", "pipeline", "configs", "dvc.yaml", "params.yaml", ".dvcignore")
BUDGET_S = 450.0  # 8 minutes less start-up, the last stage's write and a margin


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one run measures: the paper's sizes on a GPU, or tiny ones (`--tiny`) that check the path on CPU."""

    name: str
    diffusion: dict[str, Any]  # over configs/paper/apl.yaml's diffusion section
    fit_steps: tuple[int, int]  # short and long fit: rate = (long - short) / (t_long - t_short)
    sampling: dict[str, Any]  # over the preset's sampling section
    agent: dict[str, Any]  # over each preset's agent section
    updates: int
    warmup: int  # agent updates before timing: first-call allocations and kernel selection
    threads: int  # torch threads for the kernels (0: torch's default); tiny nets are fastest on one
    round: dict[str, Any]  # the budget preset over configs/paper/apl.yaml for the round


PAPER_SIZES = Sizes(
    name="paper",
    diffusion={},
    fit_steps=(100, 600),
    sampling={},
    agent={},
    updates=300,
    warmup=20,
    threads=0,
    round={
        # HalfCheetah random built locally (params.yaml builds 100K rows, D4RL has 1M); the preset leaves it to us
        "dataset": {"env": "halfcheetah", "kind": "random", "transitions": 50_000},
        "pretrain": {"steps": 1000, "eval_every": 0},  # of 1M
        # one explore/train cycle, halved: 500 env steps, then utd 10 -> 5K updates (of 10K env steps a round)
        "rollout": {"steps": 500, "train_every": 500},
        "diffusion": {"train_steps": 3000},  # of 100K
        "sampling": {"n_rows": 50_000},  # of 1M
    },
)
TINY_SIZES = Sizes(
    name="tiny",
    diffusion={"width": 64, "depth": 2},
    fit_steps=(10, 110),
    sampling={"steps": 4, "batch": 64},
    agent={"hidden_dims": [32, 32], "batch_size": 64},
    updates=10,
    warmup=3,
    threads=1,
    round={
        "dataset": {"env": "halfcheetah", "kind": "random", "transitions": 2000, "torch_threads": 1},
        "agent": {"hidden_dims": [32, 32], "batch_size": 64},
        "pretrain": {"steps": 50, "eval_every": 0, "eval_episodes": 1, "threads": 1},
        "rollout": {"steps": 200, "train_every": 100, "utd": 1, "eval_episodes": 1, "chunk_rows": 200, "threads": 1},
        "diffusion": {"width": 64, "depth": 2, "train_steps": 50, "threads": 1},
        "sampling": {"n_rows": 500, "steps": 4, "batch": 256, "threads": 1},
        "quality": {"max_rows": 200, "fidelity_rows": 50},
    },
)


class Deadline:
    """The run's time budget: what no longer fits is recorded as skipped instead of overrunning."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset (Table 6's other column); None on CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def preset(algo: str) -> dict[str, Any]:
    return yaml.safe_load((PAPER / f"{algo}.yaml").read_text())


def modes(device: torch.device) -> list[tuple[str, str, bool]]:
    """(label, precision, compile): compile only where the library applies it (the denoiser, CUDA)."""
    out = [("fp32", "fp32", False), ("bf16", "bf16", False)]
    if device.type == "cuda":
        out.append(("bf16+compile", "bf16", True))
    return out


# --------------------------------------------------------------------------------------------
# Kernels


def fit_and_sample(sizes: Sizes, label: str, precision: str, compiled: bool) -> dict[str, Any]:
    """Diffusion fit steps/s and sampled rows/s of the paper's denoiser in one mode."""
    paper = preset("apl")
    over = {"precision": precision, "compile": compiled, "device": "auto"}
    cfg_map = {**paper["diffusion"], **sizes.diffusion, **over}
    offline = make_transitions(20_000, OBS, ACT, seed=1)
    online = make_transitions(5_000, OBS, ACT, seed=2)
    seconds, model = {}, None
    device = select_device("auto")
    reset_peak(device)
    for n in sizes.fit_steps:
        cfg = from_mapping(DiffusionConfig, {**cfg_map, "train_steps": n}, "diffusion")
        variant = get_variant(cfg.variant)
        model, m = variant.fit(offline, online, cfg, seed=0, progress=False)
        seconds[n] = n / m["steps_per_s"]  # the fit loop's own clock (it syncs on its loss curve)
    short, long = sizes.fit_steps
    fit_rate = (long - short) / (seconds[long] - seconds[short])
    fit_peak = peak_mib(device)

    sampling = from_mapping(SamplingConfig, {**paper["sampling"], **sizes.sampling, "precision": precision}, "sampling")
    labels = label_pattern(0, sampling.batch, sampling.generated_online_fraction)
    denoiser = variant.denoiser(model, labels, sampling.batch, sampling)
    sample_vectors(model, denoiser, sampling.batch, 0, dataclasses.replace(sampling, steps=2))  # warm-up, compiles
    reset_peak(device)
    rows_per_s = sampling.batch / timed(lambda: sample_vectors(model, denoiser, sampling.batch, 1, sampling), device)
    return {
        "mode": label,
        "fit_steps_per_s": fit_rate,
        "fit_batch": cfg_map.get("batch_size", DiffusionConfig.batch_size),
        "fit_steps_timed": [short, long],
        "fit_peak_gpu_mib": fit_peak,
        "sampled_rows_per_s": rows_per_s,
        "sample_batch": sampling.batch,
        "sample_steps": sampling.steps,
        "sample_peak_gpu_mib": peak_mib(device),
        "width": model.cfg.width,
        "depth": model.cfg.depth,
    }


def agent_update(sizes: Sizes, algo: str, precision: str) -> dict[str, Any]:
    """ms per online update of the paper preset's agent (one uniform batch from an in-memory buffer)."""
    device = select_device("auto")
    cfg = agent_config({**preset(algo)["agent"], **sizes.agent, "precision": precision})
    torch.manual_seed(0)
    agent = make_agent(cfg, OBS, ACT, 1.0, device)
    agent.start_online()
    buffer = ReplayBuffer.from_transitions(make_transitions(50_000, OBS, ACT, seed=0), device)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        agent.update(sample_uniform(buffer, cfg.batch_size, gen))

    for _ in range(sizes.warmup):
        step()
    reset_peak(device)
    seconds = timed(lambda: [step() for _ in range(sizes.updates)], device)
    return {
        "algo": algo,
        "engine": cfg.apl_engine if algo == "apl" else None,
        "precision": precision,
        "update_ms": 1000.0 * seconds / sizes.updates,
        "batch": cfg.batch_size,
        "hidden": list(cfg.hidden_dims),
        "updates_timed": sizes.updates,
        "peak_gpu_mib": peak_mib(device),
    }


# --------------------------------------------------------------------------------------------
# One round end to end


def make_round_project(dst: Path, budget: dict[str, Any]) -> Path:
    """A fresh project of this checkout's code with the APL paper preset and `budget` over it."""
    dst.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=dst, check=True, env=stage_env(dst))
    apply_preset(PAPER / "apl.yaml", dst / "params.yaml", rounds=1)
    (dst / "budget.yaml").write_text(yaml.safe_dump(budget, sort_keys=False))
    apply_preset(dst / "budget.yaml", dst / "params.yaml")
    return dst


def stage_env(project: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(project), CFDG_PROGRESS="0", DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1")
    for hook in ("CFDG_FAIL_STAGE", "CFDG_KILL_AT"):  # never inherit the testing hooks
        env.pop(hook, None)
    return env


def run_round(sizes: Sizes, work: Path, deadline: Deadline, record: Callable[[dict], None]) -> None:
    """`dvc repro` of each stage of round 1 in turn, each timed; `record` gets every stage's row."""
    project = make_round_project(work / "project", sizes.round)
    for stage in ROUND_STAGES:
        left = deadline.left()
        if left < 5:
            record({"stage": stage, "status": "skipped: over the time budget"})
            continue
        t = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
                cwd=project, env=stage_env(project), capture_output=True, text=True, timeout=left,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            record({"stage": stage, "status": f"timed out after {time.perf_counter() - t:.0f} s (the budget)"})
            continue
        row: dict[str, Any] = {"stage": stage, "wall_s": time.perf_counter() - t}
        row["status"] = "ok" if proc.returncode == 0 else f"failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        record(row)


# --------------------------------------------------------------------------------------------
# The record


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def commit() -> str:
    """This checkout's commit (+dirty); a copy without .git can name it in CFDG_COMMIT."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return head.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("CFDG_COMMIT", "unknown (no git checkout; set CFDG_COMMIT)")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def readme(result: dict[str, Any]) -> str:
    """The results as markdown tables: what the README of results/gpu/ shows."""
    lines = [
        "# Table 6 quantities on one GPU (`bench/gpu.sh`)",
        "",
        f"- device: {result['device']}; torch {result['torch']}; sizes: {result['sizes']}",
        f"- commit {result['commit']}; {result['date']}; `{result['command']}`; {result['seconds']:.0f} s in all",
        "",
        "## Diffusion (denoiser of configs/paper/apl.yaml)",
        "",
        "| mode | width x depth | fit steps/s (batch) | sampled rows/s (batch, steps) | peak GPU MiB fit / sample |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["diffusion"]:
        if "skipped" in r:
            lines.append(f"| {r['mode']} | {r['skipped']} | | | |")
            continue
        lines.append(
            f"| {r['mode']} | {r['width']}x{r['depth']} | {fmt(r['fit_steps_per_s'])} ({r['fit_batch']}) "
            f"| {fmt(r['sampled_rows_per_s'])} ({r['sample_batch']}, {r['sample_steps']}) "
            f"| {fmt(r['fit_peak_gpu_mib'], 0)} / {fmt(r['sample_peak_gpu_mib'], 0)} |"
        )
    lines += ["", "## Agent updates (online phase, configs/paper/<algo>.yaml)", ""]
    lines += ["| agent | precision | hidden | batch | ms/update | peak GPU MiB |", "|---|---|---|---:|---:|---:|"]
    for r in result["agents"]:
        if "skipped" in r:
            lines.append(f"| {r['algo']} | {r['precision']} | {r['skipped']} | | | |")
            continue
        name = r["algo"] + (f" ({r['engine']})" if r["engine"] else "")
        lines.append(
            f"| {name} | {r['precision']} | {r['hidden']} | {r['batch']} | {fmt(r['update_ms'], 2)} "
            f"| {fmt(r['peak_gpu_mib'], 0)} |"
        )
    lines.append("torch.compile: the denoiser only (the agents have no compile option), on CUDA only.")
    lines += ["", "## One round of the APL paper preset, shortened", ""]
    lines += ["Budget over configs/paper/apl.yaml (`rounds: 1`; the paper runs 10 rounds):", ""]
    lines += ["| setting | paper preset | this run |", "|---|---:|---:|"]
    paper = preset("apl")
    for section, values in result["round_budget"].items():
        for key, value in values.items():
            lines.append(f"| {section}.{key} | {paper.get(section, {}).get(key, '(yours)')} | {value} |")
    lines += ["", "| stage | wall s | status |", "|---|---:|---|"]
    for r in result["round"]:
        lines.append(f"| {r['stage']} | {fmt(r.get('wall_s'))} | {r['status']} |")
    lines += [
        "",
        "Wall time per stage is `dvc repro --single-item <stage>` timed from outside: Python, torch and DVC",
        "start-up included. Fit steps/s exclude the first step and compilation (difference of two fits).",
    ]
    return "\n".join(lines) + "\n"


def attempt(deadline: Deadline, key: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One measurement, or why there is none: a lent GPU gives one try, so a failure (say, torch.compile
    without a working compiler) is recorded and the run goes on."""
    if deadline.left() <= 0:
        return {**key, "skipped": "over the time budget"}
    try:
        return measure()
    except Exception as e:  # recorded in the results, not hidden
        return {**key, "skipped": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes on whatever device is here (about a minute)")
    ap.add_argument("--out", type=Path, help="output folder (default results/gpu, or a temporary one with --tiny)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="stop starting new work after this long")
    args = ap.parse_args(argv)
    sizes = TINY_SIZES if args.tiny else PAPER_SIZES
    out = args.out or (Path(tempfile.gettempdir()) / "cfdg-gpu-tiny" if args.tiny else ROOT / "results" / "gpu")
    deadline = Deadline(args.budget_s)
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    start = time.monotonic()
    device = select_device("auto")
    result: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": os.environ.get("CFDG_BENCH_COMMAND", " ".join([sys.argv[0], *(argv or sys.argv[1:])])),
        "sizes": sizes.name,
        "seconds": 0.0,
        "diffusion": [],
        "agents": [],
        "round_budget": sizes.round,
        "round": [],
    }

    def save() -> None:
        result["seconds"] = time.monotonic() - start
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "README.md").write_text(readme(result))

    def log(msg: str) -> None:
        print(f"[gpu {time.monotonic() - start:5.0f} s] {msg}", file=sys.stderr, flush=True)

    # Agents first (seconds), then the denoiser with compilation last: the kernels stop starting new
    # work at 40% of the budget so that the round always gets the rest.
    kernels = Deadline(args.budget_s * 0.4)
    for algo in ("iql", "pex", "apl"):
        for precision in ("fp32", "bf16"):
            log(f"agent {algo} {precision}")
            result["agents"].append(
                attempt(
                    kernels,
                    {"algo": algo, "precision": precision},
                    lambda a=algo, p=precision: agent_update(sizes, a, p),
                )
            )
            save()
    for label, precision, compiled in modes(device):
        log(f"diffusion {label}")
        result["diffusion"].append(
            attempt(kernels, {"mode": label}, lambda p=precision, c=compiled, m=label: fit_and_sample(sizes, m, p, c))
        )
        save()
    with tempfile.TemporaryDirectory(prefix="cfdg-gpu-round-") as work:

        def record(row: dict[str, Any]) -> None:
            log(f"round: {row['stage']} {fmt(row.get('wall_s'))} s {row['status']}")
            result["round"].append(row)
            save()

        run_round(sizes, Path(work), deadline, record)
    save()
    print(readme(result))
    print(f"written: {out / 'README.md'}, {out / 'gpu.json'}")
    failed = [r["stage"] for r in result["round"] if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
