"""Report pictures and tables: pure functions from metrics to PNG files and Markdown text.

The learning curve (normalised score vs environment steps), the per-round JS divergences in
the form of the paper's Table 2, and the paper's Table 1 (base vs CFDG per algorithm, mean ±
std over seeds) for whichever runs are present. Figures use matplotlib's Agg canvas directly
(no pyplot state), and PNGs carry no software/date metadata, so the same numbers give the
same bytes.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cfdg.diffusion.variants.registry import display_name, order
from cfdg.io import atomic_write_bytes

DIVERGENCES = ("state", "action", "transition")


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    """One evaluation: the agent after `env_steps` online steps (0 = pretrained)."""

    env_steps: int
    score: float
    std: float = 0.0
    round: int = 0


def _figure(width: float = 6.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: str | Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return atomic_write_bytes(out_png, buf.getvalue())


# The D4RL scale: 0 = random policy, 100 = expert. The y-axis always shows it, so that a
# run near one score does not stretch evaluation noise over the whole picture.
D4RL_SCALE = (0.0, 100.0)


def score_limits(curves: Mapping[str, Sequence[CurvePoint]], margin: float = 5.0) -> tuple[float, float]:
    """y-limits holding the D4RL scale and every point's ± std band (widened past it only when a point is)."""
    lows = [p.score - p.std for pts in curves.values() for p in pts]
    highs = [p.score + p.std for pts in curves.values() for p in pts]
    bottom = D4RL_SCALE[0] if min(lows) >= D4RL_SCALE[0] else min(lows) - margin
    top = D4RL_SCALE[1] if max(highs) <= D4RL_SCALE[1] else max(highs) + margin
    return bottom, top


def learning_curve_figure(curves: Mapping[str, Sequence[CurvePoint]], title: str = ""):
    """The learning-curve figure: one line (± std band) per curve on the D4RL scale, and each
    curve's pretrained score (its point at 0 online steps) as a dashed reference line."""
    if not curves or not any(curves.values()):
        raise ValueError("learning_curve_png: no points to plot")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, points in curves.items():
        pts = sorted(points, key=lambda p: p.env_steps)
        x = [p.env_steps for p in pts]
        y = [p.score for p in pts]
        lo = [p.score - p.std for p in pts]
        hi = [p.score + p.std for p in pts]
        (line,) = ax.plot(x, y, marker="o", label=name)
        ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
        if pts and pts[0].env_steps == 0:
            ax.axhline(pts[0].score, color=line.get_color(), lw=0.8, ls="--", label=f"{name} pretrained")
    ax.set_ylim(*score_limits(curves))
    ax.set_xlabel("environment steps (online)")
    ax.set_ylabel("D4RL normalised score")
    ax.set_title(title or "Learning curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def learning_curve_png(curves: Mapping[str, Sequence[CurvePoint]], out_png: str | Path, title: str = "") -> Path:
    """Normalised score vs environment steps as a PNG (see `learning_curve_figure`)."""
    return _save(learning_curve_figure(curves, title), out_png)


def _estimate(value: Any, estimator: str) -> float | None:
    if isinstance(value, Mapping):
        value = value.get(estimator)
    return None if value is None else float(value)


def quality_rows(per_round: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flatten per-round quality JSONs into rows (round, divergence, offline, generated, ...hist).

    Each input is `{"round": k, "offline_vs_online": {...}, "generated_vs_online": {...}?}` where
    the inner mappings are `{state|action|transition: {classifier: x, histogram: y}}`.
    """
    rows = []
    for q in sorted(per_round, key=lambda q: q["round"]):
        for div in DIVERGENCES:
            row: dict[str, Any] = {"round": int(q["round"]), "divergence": div}
            for side in ("offline", "generated"):
                block = q.get(f"{side}_vs_online") or {}
                row[side] = _estimate(block.get(div), "classifier")
                row[f"{side}_histogram"] = _estimate(block.get(div), "histogram")
            rows.append(row)
    return rows


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def quality_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 2's layout per round: JS divergence to real online data, in nats (max ln 2 ≈ 0.69)."""
    lines = [
        "| Round | Divergence | Offline | Generated |",
        "|---:|---|---:|---:|",
    ]
    for r in rows:
        off = f"{_fmt(r['offline'])} ({_fmt(r.get('offline_histogram'))})"
        gen = f"{_fmt(r['generated'])} ({_fmt(r.get('generated_histogram'))})"
        lines.append(f"| {r['round']} | {r['divergence'].capitalize()} | {off} | {gen} |")
    note = (
        "\nJensen-Shannon divergence to the real online data of the round, in nats (lower is better, "
        "max ln 2 ≈ 0.69): classifier two-sample estimate, per-dimension histogram estimate in brackets. "
        "Generated = the online-labelled synthetic samples (the whole store is in quality.json).\n"
    )
    return "\n".join(lines) + "\n" + note


def quality_png(rows: Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    """Per-round JS divergence, one panel per divergence, offline vs generated."""
    from matplotlib.ticker import MaxNLocator

    if not rows:
        raise ValueError("quality_png: no rows to plot")
    fig = _figure(10.0, 3.2)
    for i, div in enumerate(DIVERGENCES):
        ax = fig.add_subplot(1, 3, i + 1)
        sub = sorted((r for r in rows if r["divergence"] == div), key=lambda r: r["round"])
        for side, marker in (("offline", "s"), ("generated", "o")):
            pts = [(r["round"], r[side]) for r in sub if r[side] is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=side)
        ax.axhline(math.log(2), color="grey", lw=0.8, ls="--")
        ax.set_title(div)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 0.75)
        if i == 0:
            ax.set_ylabel("JS divergence to online (nats)")
            ax.legend(loc="lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_png)


def aggregate(
    summaries: Iterable[Mapping[str, Any]], ddof: int = 0
) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    """(dataset, algo, variant) -> (mean, std, n) of the final normalised score over seeds
    (population std; `ddof=1`: sample std, 0 for a single seed)."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for s in summaries:
        groups[(str(s["dataset"]), str(s["algo"]).lower(), str(s["variant"]))].append(float(s["final_score"]))
    out = {}
    for key, scores in groups.items():
        mean = sum(scores) / len(scores)
        dof = len(scores) - ddof
        std = math.sqrt(sum((x - mean) ** 2 for x in scores) / dof) if dof > 0 else 0.0
        out[key] = (mean, std, len(scores))
    return out


def table1_markdown(summaries: Iterable[Mapping[str, Any]], ddof: int = 0) -> str:
    """The paper's Table 1 for the runs present: a row per dataset, Base vs CFDG per algorithm.

    Each summary is `{dataset, algo, variant, seed, final_score}` (a run's `summary.json`);
    cells are mean ± std over seeds with the seed count, the better of each pair in bold.
    """
    stats = aggregate(summaries, ddof)
    if not stats:
        raise ValueError("table1_markdown: no runs")
    datasets = sorted({k[0] for k in stats})
    algos = [a for a in ("iql", "pex", "apl") if any(k[1] == a for k in stats)]
    algos += sorted({k[1] for k in stats} - set(algos))
    variants = sorted({k[2] for k in stats}, key=order)
    header = ["Dataset"] + [f"{a.upper()} {display_name(v)}" for a in algos for v in variants]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    totals: dict[tuple[str, str], float] = defaultdict(float)
    complete: dict[tuple[str, str], bool] = defaultdict(lambda: True)
    for d in datasets:
        cells = [d]
        for a in algos:
            present = {v: stats[(d, a, v)] for v in variants if (d, a, v) in stats}
            best = max((m for m, _, _ in present.values()), default=None)
            for v in variants:
                if v not in present:
                    cells.append("–")
                    complete[(a, v)] = False
                    continue
                mean, std, n = present[v]
                totals[(a, v)] += mean
                text = f"{mean:.1f} ± {std:.1f} (n={n})"
                cells.append(f"**{text}**" if len(present) > 1 and mean == best else text)
        lines.append("| " + " | ".join(cells) + " |")
    if len(datasets) > 1:
        cells = ["Total"]
        for a in algos:
            for v in variants:
                cells.append(f"{totals[(a, v)]:.1f}" if complete[(a, v)] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- Ground truth per round: alignment to the round's and to fresh data, fidelity, memorisation ------

GROUND_TRUTH_DATA = ("offline", "online", "generated", "generated_all")
GROUND_TRUTH_NAMES = {
    "offline": "Offline data",
    "online": "Real online (round buffer)",
    "generated": "Generated (online-labelled)",
    "generated_all": "Generated (whole store)",
}


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, Mapping) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def ground_truth_rows(
    per_round: Sequence[Mapping[str, Any]], fresh: Mapping[int, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per (round, data set): state JS to the round's online data and to the next round's fresh
    rows, simulator fidelity and memorisation ratios; None where not measured.

    `per_round` are the rounds' quality.json (materialise); `fresh[k]` is what the report measured
    against round k+1's fresh rows (`{"<data>_vs_fresh": js, "memorisation": {...}}`).
    """
    fresh = fresh or {}
    rows = []
    for q in sorted(per_round, key=lambda q: q["round"]):
        k = int(q["round"])
        f = fresh.get(k, {})
        for data in GROUND_TRUTH_DATA:
            if data.startswith("generated") and not _get(q, "rows", "generated"):
                continue  # variant `none`: no store
            js_round = None if data == "online" else _get(q, f"{data}_vs_online", "state", "classifier")
            rows.append(
                {
                    "round": k,
                    "data": data,
                    "js_state_round": js_round,
                    "js_state_fresh": _get(f, f"{data}_vs_fresh", "state", "classifier"),
                    "js_transition_fresh": _get(f, f"{data}_vs_fresh", "transition", "classifier"),
                    "next_state_rel_error": _get(q, "fidelity", data, "next_state_rel_error"),
                    "reward_rel_error": _get(q, "fidelity", data, "reward_rel_error"),
                    "termination_agreement": _get(q, "fidelity", data, "termination_agreement"),
                    "share_checked": _get(q, "fidelity", data, "share_checked"),
                    "memorisation_round": _get(q, "memorisation", "ratio") if data == "generated" else None,
                    "memorisation_fresh": _get(f, "memorisation", "ratio") if data == "generated" else None,
                }
            )
    return rows


def _sci(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x >= 0.01 else f"{x:.0e}"


def ground_truth_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per round and data set: alignment (to the round's data and to fresh rows), fidelity, memorisation."""
    lines = [
        "| Round | Data | State JS to round | State JS to fresh | Transition JS to fresh | Next-state rel. error "
        "| Reward rel. error | Termination agreement | Rows checked | Memorisation (round / fresh) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = "–"
        if r["memorisation_round"] is not None or r["memorisation_fresh"] is not None:
            mem = f"{_fmt(r['memorisation_round'])} / {_fmt(r['memorisation_fresh'])}"
        share = "–" if r["share_checked"] is None else f"{100 * r['share_checked']:.0f}%"
        lines.append(
            f"| {r['round']} | {GROUND_TRUTH_NAMES.get(r['data'], r['data'])} | {_fmt(r['js_state_round'])} "
            f"| {_fmt(r['js_state_fresh'])} | {_fmt(r['js_transition_fresh'])} | {_sci(r['next_state_rel_error'])} "
            f"| {_sci(r['reward_rel_error'])} | {_fmt(r['termination_agreement'], 3)} | {share} | {mem} |"
        )
    note = (
        "\nState/transition JS: classifier estimate in nats (lower is better, max ln 2 ≈ 0.69) to the round's "
        "online data (what the model was fitted on) and to the next round's fresh online rows (never seen by "
        "the model; absent for the last round). Next-state error relative to copying s' = s, reward error "
        "relative to the simulator's reward variance, both from replaying rows in the MuJoCo simulator "
        "(real rows score ≈ 0 by construction). Memorisation: median nearest-neighbour distance of generated "
        "rows to the round's online rows over that of held-out real rows (round: leave-one-episode-out; "
        "fresh: the next round's rows); ≈ 1 healthy, ≪ 1 copying.\n"
    )
    return "\n".join(lines) + "\n" + note


def ground_truth_png(rows: Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    """Per round: state JS (to round / to fresh), next-state relative error (log scale), memorisation ratio."""
    from matplotlib.ticker import MaxNLocator

    if not rows:
        raise ValueError("ground_truth_png: no rows to plot")
    fig = _figure(12.0, 3.4)
    panels = (
        ("state JS (nats)", (("js_state_round", "-", "to round"), ("js_state_fresh", "--", "to fresh"))),
        ("next-state rel. error (shown >= 1e-7)", (("next_state_rel_error", "-", ""),)),
        ("memorisation ratio", (("memorisation_round", "-", "round"), ("memorisation_fresh", "--", "fresh"))),
    )
    colors = {"offline": "tab:orange", "online": "tab:green", "generated": "tab:blue", "generated_all": "tab:purple"}
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        drawn = False
        for data in GROUND_TRUTH_DATA:
            for key, style, suffix in series:
                pts = sorted((r["round"], r[key]) for r in rows if r["data"] == data and r[key] is not None)
                if not pts:
                    continue
                y = [max(p[1], 1e-7) for p in pts] if key == "next_state_rel_error" else [p[1] for p in pts]
                label = GROUND_TRUTH_NAMES[data] + (f", {suffix}" if suffix else "")
                ax.plot([p[0] for p in pts], y, style, marker="o", color=colors[data], label=label)
                drawn = True
        if i == 0:
            ax.axhline(math.log(2), color="grey", lw=0.8, ls=":")
            ax.set_ylim(0, 0.75)
        elif i == 1 and drawn:
            ax.set_yscale("log")
        else:
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize=6)
    fig.tight_layout()
    return _save(fig, out_png)
