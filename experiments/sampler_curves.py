"""Guidance and sampler curves: fidelity and alignment against w and against network evaluations.

    python experiments/sampler_curves.py run --data rounds.npz --out curves.jsonl [--seeds 3] [--workers 12]
    python experiments/sampler_curves.py table curves.jsonl [ablation.jsonl ...] \
        --md results/generator-ablation/fidelity.md --png results/generator-ablation/fidelity.png

On round CURVE_ROUND's data of the default run (fresh rows = what round CURVE_ROUND+1 adds), the
default CFDG model (experiments/generator_ablation.py's `baseline`, 3 seeds) is sampled with
- guidance w ∈ {0, 0.5, 1, 2, 4} (stochastic Heun, 32 steps: the default run's sampler), and
- deterministic Heun (2N−1 calls), the stochastic EDM sampler (2N−1 calls, S_churn 80) and
  DPM-Solver++(2M) (N calls) at N = 8…128 steps (w = 1),
and each sample set is measured as in experiments/generator_ablation.py (simulator fidelity; classifier JS of
states and transitions to the round's data and to the fresh rows). The table also names the
cheapest setting (fewest network calls) whose mean is within one std (over seeds, the larger of
the two settings' stds) of the 128-step stochastic sampler on every fresh-row measure and on
fidelity: the fast-sampler preset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import generator_ablation as ablation

MATCH = ("next_state_rel_error", "js_state_fresh", "js_transition_fresh")
COLS = [
    ("next_state_rel_error", "next-state rel. err"),
    ("reward_rel_error", "reward rel. err"),
    ("js_state", "state JS (round)"),
    ("js_state_fresh", "state JS (fresh)"),
    ("js_transition_fresh", "trans. JS (fresh)"),
]
REFERENCE = ablation.Sampler(w=ablation.CURVE_W, steps=128).tag  # the 128-step stochastic sampler


def curve_records(recs: list[dict]) -> dict[str, list[dict]]:
    """sampler tag → records of the CFDG baseline model on round CURVE_ROUND (w sweep and solver curves)."""
    names = {c.name for c in ablation.CURVES}
    out: dict[str, list[dict]] = {}
    for r in recs:
        if r["candidate"] in names and r["variant"] == "cfdg" and r["round"] == ablation.CURVE_ROUND:
            out.setdefault(r["sampler"], []).append(r)
    for tag in out:  # the same (seed, sampler) from two candidates fits the same model: keep one
        seen: dict[int, dict] = {}
        for r in out[tag]:
            seen.setdefault(r["seed"], r)
        out[tag] = list(seen.values())
    return out


def stats(rs: list[dict], key: str) -> tuple[float, float]:
    v = [r[key] for r in rs if r.get(key) is not None]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def fast_preset(curves: dict[str, list[dict]]) -> str | None:
    """Fewest network calls whose every MATCH measure is within one std of the 128-step stochastic sampler."""
    if REFERENCE not in curves:
        return None
    ok = []
    for tag, rs in curves.items():
        if rs[0]["w"] != ablation.CURVE_W or len(rs) < 2:
            continue
        within = True
        for key in MATCH:
            m, s = stats(rs, key)
            m0, s0 = stats(curves[REFERENCE], key)
            # "no worse than the reference by more than one std"; better is fine
            within &= not (m > m0 + max(s, s0))
        if within:
            ok.append((rs[0]["nfe"], tag))
    return min(ok)[1] if ok else None


def markdown(curves: dict[str, list[dict]]) -> str:
    def key(tag: str) -> tuple:
        r = curves[tag][0]
        return (r["w"] != ablation.CURVE_W, r["solver"], r["stochastic"], r["precision"], r["w"], r["steps"])

    lines = [
        "| sampler | w | steps | network calls | seeds | " + " | ".join(h for _, h in COLS) + " |",
        "|" + "---|" * (5 + len(COLS)),
    ]
    for tag in sorted(curves, key=key):
        rs = curves[tag]
        cells = [ablation._fmt([r.get(c) for r in rs]) for c, _ in COLS]
        r = rs[0]
        lines.append(f"| {tag} | {r['w']:g} | {r['steps']} | {r['nfe']} | {len(rs)} | " + " | ".join(cells) + " |")
    best = fast_preset(curves)
    lines.append("")
    lines.append(f"Cheapest setting within one std of {REFERENCE} on {', '.join(MATCH)}: **{best}**")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("next_state_rel_error", "next-state error / copying s"),
        ("js_state_fresh", "state JS to fresh rows"),
        ("js_transition_fresh", "transition JS to fresh rows"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    ws = sorted(
        {
            rs[0]["w"]
            for rs in curves.values()
            if rs[0]["solver"] == "heun" and rs[0]["stochastic"] and rs[0]["steps"] == 32
        }
    )
    for j, (k, label) in enumerate(keys):
        ax = axes[0, j]
        ws_here = [w for w in ws if ablation.Sampler(w=w).tag in curves]
        ms = [stats(curves[ablation.Sampler(w=w).tag], k) for w in ws_here]
        if ms:
            ax.errorbar(ws_here, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3)
        ax.set_xlabel("guidance w (stochastic Heun, 32 steps)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax = axes[1, j]
        for name, solver, stoch in (
            ("Heun (deterministic)", "heun", False),
            ("EDM stochastic", "heun", True),
            ("DPM-Solver++(2M)", "dpmpp2m", False),
        ):
            pts = sorted(
                (rs[0]["nfe"], *stats(rs, k))
                for rs in curves.values()
                if rs[0]["solver"] == solver
                and rs[0]["stochastic"] == stoch
                and rs[0]["w"] == ablation.CURVE_W
                and rs[0].get("precision", "fp32") == "fp32"
            )
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    yerr=[p[2] for p in pts],
                    marker="o",
                    capsize=3,
                    label=name,
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"network calls per sample (w = {ablation.CURVE_W:g})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"CFDG model (batches 80% online), round {ablation.CURVE_ROUND} data of the default run (mean ± std, 3 seeds)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--workers", type=int, default=12)
    r.add_argument("--deadline", type=float, default=3600.0)
    t = sub.add_parser("table")
    t.add_argument("results", type=Path, nargs="+")
    t.add_argument("--md", type=Path)
    t.add_argument("--png", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "run":
        names = [c.name for c in ablation.CURVES]
        ablation.run(a.data, a.out, names, ["cfdg"], a.seeds, a.workers, a.deadline, references=False)
        return 0
    curves = curve_records(ablation.read_records(a.results))
    md = markdown(curves)
    print(md)
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(md)
    if a.png:
        plot(curves, a.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
