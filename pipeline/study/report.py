"""A study's report: the paper's Tables 1, 2, 3 and 6 and aggregated learning curves.

Everything is read from the committed results files `results/<study>/cells/<cell>.json`
(pipeline/study/results.py: the learning curve from the cells' metrics files, quality from
rounds/k/quality.json, and the stage timings of the cells' state files), so a fresh clone with no
workspace rebuilds the report. Cells not finished yet are left out and counted.

Checks before any table: each file is a well-formed record of its cell whose params agree with
every setting the study file pins; all cells come from one commit (or the caller says to mix,
and every table says so); and the variants of one seed start from the same pretrained agent and
the same round-1 data, which the paired intervals rely on (a seed where they do not is flagged).
Mean ± std are over seeds with the sample std (n − 1), in every table.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cfdg import report as cfdg_report
from cfdg.diffusion.variants.registry import display_name, order
from cfdg.errors import ConfigError
from cfdg.io import atomic_write_json, atomic_write_text
from pipeline.faults import ROUND_STAGES
from pipeline.study.keys import ONLINE_STAGES
from pipeline.study.results import read_result, report_record, result_path, results_dir
from pipeline.study.spec import study_pins
from pipeline.study.workspace import Plan

DIVERGENCES = ("state", "action", "transition")
STD = "sample std over seeds (n − 1)"
MOVED_MIN = 5.0  # normalised points the base must gain, and more than 2 std of that gain


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (n − 1; 0 for one value): the one convention of every study table."""
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def _fmt(xs: Sequence[float], digits: int = 1) -> str:
    if not xs:
        return "–"
    m, s = _mean_std(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


@dataclasses.dataclass
class Collected:
    """The records the report reads, and what it found about them."""

    records: list[dict[str, Any]]
    read: list[Path]  # the cell files read
    missing: list[str]  # cells with no results yet
    commits: dict[str, list[str]]  # commit -> cells
    mixed: bool  # several commits, allowed by the caller

    def commit_line(self) -> str:
        parts = [f"{c[:10]} ({len(cells)} cells)" for c, cells in sorted(self.commits.items())]
        return "code " + ", ".join(parts) if parts else "no cells"


def collect(plan: Plan, mix_commits: bool = False) -> Collected:
    """One record per cell with committed results (`results/<study>/cells/`), exporting finished
    workspaces first: the tables need nothing but those files. Refuses (ConfigError, one line) a
    malformed file, a record whose params disagree with the study file, and cells of different
    commits unless `mix_commits`."""
    plan.export_finished()
    pins = study_pins(plan.study, plan.root)
    records, read, missing = [], [], []
    commits: dict[str, list[str]] = defaultdict(list)
    for c in plan.study.cells:
        path = result_path(plan.root, plan.study.name, c)
        rec = read_result(path, c, pins[c.name])
        if rec is None:
            missing.append(c.name)
            continue
        read.append(path)
        records.append(report_record(rec))
        commits[str(rec["commit"])].append(c.name)
    if len(commits) > 1 and not mix_commits:
        listed = "; ".join(f"{k[:10]}: {', '.join(v)}" for k, v in sorted(commits.items()))
        raise ConfigError(
            f"{plan.study.path}: cells come from {len(commits)} commits ({listed}); rerun them at one commit, "
            "or pass --mix-commits to report them together (every table then says so)"
        )
    return Collected(records, read, missing, dict(commits), len(commits) > 1)


def pairing(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Seeds whose variants do not start alike: a different pretrained agent (score or stage key)
    or different round-1 rollout metrics (round 1 trains on no synthetic data in any variant)."""
    by: dict[tuple[str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if not r["ablation"]:
            by[(r["dataset"], r["algo"], r["seed"])].append(r)
    flags = []
    for (d, a, seed), rs in sorted(by.items()):
        if len(rs) < 2:
            continue
        first = rs[0]
        for r in rs[1:]:
            what = []
            if r["pretrain_score"] != first["pretrain_score"] or (
                r["stage_keys"].get("pretrain") != first["stage_keys"].get("pretrain")
            ):
                what.append("pretrained agent")
            if r["round1"] != first["round1"]:
                what.append("round-1 data")
            if what:
                flags.append(
                    f"- {d} / {a.upper()} seed {seed}: {_vname(r['variant'])} and {_vname(first['variant'])} "
                    f"differ in their {' and '.join(what)}; their paired difference is not a paired comparison."
                )
    return flags


def _vname(v: str) -> str:
    return display_name(v)


def _variants(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({r["variant"] for r in records}, key=order)


def table1(records: Sequence[Mapping[str, Any]]) -> str:
    main = [r for r in records if not r["ablation"]]
    if not main:
        return "No finished cells without ablation.\n"
    summaries = [
        {"dataset": r["dataset"], "algo": r["algo"], "variant": r["variant"], "final_score": r["final_score"]}
        for r in main
    ]
    lines = [
        f"D4RL-normalised final score, mean ± {STD}:",
        "",
        cfdg_report.table1_markdown(summaries, ddof=1),
        "",
        f"Pretrained → after the last round (D4RL-normalised, mean ± {STD}):",
        "",
    ]
    lines += [
        "| Dataset | Algorithm | Variant | Pretrained | Final | Change | Seeds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in main:
        groups[(r["dataset"], r["algo"], r["variant"])].append(r)
    for (d, a, v), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order(kv[0][2]))):
        pre = [r["pretrain_score"] for r in rs]
        fin = [r["final_score"] for r in rs]
        change = [f - p for f, p in zip(fin, pre, strict=True)]
        lines.append(f"| {d} | {a.upper()} | {_vname(v)} | {_fmt(pre)} | {_fmt(fin)} | {_fmt(change)} | {len(rs)} |")
    return "\n".join(lines) + "\n"


def t_interval(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean (sample std, n − 1 degrees of freedom)."""
    from scipy import stats  # here: a second of import time that only a paired table needs

    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan"), float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return m, m - half, m + half


def paired_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Each variant against the base (`none`) on the same seeds: the paired difference of final
    scores with its 95% t-interval, so a reader sees whether a difference is noise; and whether the
    base agent itself moved (final − pretrained ≥ 5 points and > 2 × the std of that change); then
    CFDG against each other generator on the same seeds."""
    main = [r for r in records if not r["ablation"]]
    by: dict[tuple[str, str], dict[str, dict[int, Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for r in main:
        by[(r["dataset"], r["algo"])][r["variant"]][r["seed"]] = r
    if not by:
        return "No finished cells without ablation.\n"
    lines = [
        "| Dataset | Algorithm | Comparison | Seeds | Mean difference | 95% interval | Verdict |",
        "|---|---|---|---:|---:|---|---|",
    ]
    moves: list[str] = []
    for (d, a), variants in sorted(by.items()):
        base = variants.get("none", {})
        if len(base) >= 2:
            change = [base[s]["final_score"] - base[s]["pretrain_score"] for s in sorted(base)]
            m = sum(change) / len(change)
            sd1 = math.sqrt(sum((x - m) ** 2 for x in change) / (len(change) - 1))
            moved = m >= MOVED_MIN and m > 2 * sd1  # an improvement: signed, not |·|
            moves.append(
                f"- {d} / {a.upper()}: base agent final − pretrained = {m:+.1f} (sample std {sd1:.1f}, "
                f"n {len(change)}): "
                + (
                    "moved (≥ +5 points and > 2 std)."
                    if moved
                    else "did not measurably improve (needs ≥ +5 and > 2 std)."
                )
            )
        for v in _variants([{"variant": v} for v in variants]):
            if v == "none":
                continue
            seeds = sorted(set(base) & set(variants[v]))
            if len(seeds) < 2:
                continue
            diffs = [variants[v][s]["final_score"] - base[s]["final_score"] for s in seeds]
            m, lo, hi = t_interval(diffs)
            verdict = (
                "better than base" if lo > 0 else "worse than base" if hi < 0 else "no difference (interval holds 0)"
            )
            lines.append(
                f"| {d} | {a.upper()} | {_vname(v)} − {_vname('none')} | {len(seeds)} | {m:+.1f} | "
                f"[{lo:+.1f}, {hi:+.1f}] | {verdict} |"
            )
        for other in (v for v in _variants([{"variant": v} for v in variants]) if v not in ("none", "cfdg")):
            if "cfdg" not in variants:
                break
            seeds = sorted(set(variants[other]) & set(variants["cfdg"]))
            if len(seeds) < 2:
                continue
            diffs = [variants["cfdg"][s]["final_score"] - variants[other][s]["final_score"] for s in seeds]
            m, lo, hi = t_interval(diffs)
            verdict = "CFDG better" if lo > 0 else "CFDG worse" if hi < 0 else "no difference (interval holds 0)"
            lines.append(
                f"| {d} | {a.upper()} | {_vname('cfdg')} − {_vname(other)} | {len(seeds)} | {m:+.1f} | "
                f"[{lo:+.1f}, {hi:+.1f}] | {verdict} |"
            )
    return "\n".join([*lines, "", *moves]) + "\n"


FIDELITY = (
    ("fidelity.generated.next_state_rel_error", "next-state rel. error"),
    ("fidelity.generated.reward_rel_error", "reward rel. error"),
    ("memorisation.ratio", "memorisation ratio"),
)


ENERGY_ACC = re.compile(r"energy_(\w+)_accuracy")


def _round_values(rs: Sequence[Mapping[str, Any]], k: int, key: str, variant: str | None = None) -> list[float]:
    """Round k's value of a quality key over the cells (of one variant, when given) that have it."""
    return [
        q[key] for r in rs if (variant is None or r["variant"] == variant) and key in (q := r["quality"].get(k) or {})
    ]


def _panel_head(title: str, first: list[str], variants: Sequence[str]) -> list[str]:
    """A bold title and a table header: the `first` columns (the second left-aligned), then one per variant."""
    cols = [*first, *(_vname(v) for v in variants)]
    align = ["---:" if i != 1 else "---" for i in range(len(cols))]
    return [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]


def _generates(rs: Sequence[Mapping[str, Any]], variant: str) -> bool:
    key = "generated_vs_online.state.classifier"
    return any(key in q for r in rs if r["variant"] == variant for q in r["quality"].values())


def table2(records: Sequence[Mapping[str, Any]]) -> str:
    """The paper's Table 2 per round: JS divergence to the round's real online data of the offline
    data and of each variant's generated (online-labelled) rows; then the simulator fidelity and
    memorisation of the generated rows per round. Mean ± sample std over seeds."""
    panels: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r["quality"] and not r["ablation"]:
            panels[(r["dataset"], r["algo"])].append(r)
    if not panels:
        return "No per-round quality metrics yet.\n"
    lines = [
        "JS divergence to the round's real online data, nats (max ln 2 ≈ 0.69; classifier estimate; lower is "
        f"closer). Offline: the offline data against each cell's online data, all cells. A variant: its "
        f"online-labelled generated rows. Mean ± {STD}.",
        "",
    ]
    fidelity = [
        "Generated (online-labelled) rows replayed in the simulator (relative error of the model's next state "
        "and reward against MuJoCo's from the same state and action), and the memorisation ratio: median "
        "nearest-neighbour distance of generated rows to the round's online rows over that of held-out real "
        f"episodes (≈ 1 healthy, ≪ 1 copying; > 1 farther than real rows). Mean ± {STD}.",
        "",
    ]
    for (d, a), rs in sorted(panels.items()):
        gens = [v for v in _variants(rs) if _generates(rs, v)]
        rounds = sorted({k for r in rs for k in r["quality"]})
        lines += _panel_head(f"{a.upper()} on {d}", ["Round", "Divergence", "Offline"], gens)
        for k in rounds:
            for div in DIVERGENCES:
                off = _fmt(_round_values(rs, k, f"offline_vs_online.{div}.classifier"), 2)
                key = f"generated_vs_online.{div}.classifier"
                cols = [_fmt(_round_values(rs, k, key, v), 2) for v in gens]
                lines.append(f"| {k} | {div} | {off} | " + " | ".join(cols) + " |")
        lines.append("")
        if gens:
            fidelity += _panel_head(f"{a.upper()} on {d}", ["Round", "Measure"], gens)
            for k in rounds:
                for key, label in FIDELITY:
                    cols = [_fmt(_round_values(rs, k, key, v), 3) for v in gens]
                    fidelity.append(f"| {k} | {label} | " + " | ".join(cols) + " |")
            fidelity.append("")
    return "\n".join([*lines, "### Simulator fidelity per round", "", *fidelity, *energy_table(panels)])


def energy_table(panels: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]) -> list[str]:
    """EDIS's energy functions per round: how often each picks the real online row out of it and its
    K model rows (top-1 accuracy, chance 1/(K+1)), on its last training batch. Empty without EDIS cells."""
    out: list[str] = []
    for (d, a), rs in sorted(panels.items()):
        names = sorted({key for r in rs for f in r["fit"].values() for key in f if ENERGY_ACC.fullmatch(key)})
        if not names:
            continue
        cells = [r for r in rs if any(n in f for f in r["fit"].values() for n in names)]
        rounds = sorted({k for r in cells for k in r["fit"]})
        negatives = {f["energy_negatives"] for r in cells for f in r["fit"].values() if "energy_negatives" in f}
        chance = ", ".join(f"{1 / (k + 1):.3f}" for k in sorted(negatives))
        out += [
            "### EDIS's energy functions per round",
            "",
            "Top-1 accuracy of each energy at telling the round's real online row from its model rows, on its "
            f"last training batch (chance {chance}). Mean ± {STD} over the EDIS cells.",
            "",
            f"**{a.upper()} on {d}**",
            "",
            "| Round | " + " | ".join(ENERGY_ACC.fullmatch(n)[1] for n in names) + " |",
            "|---:|" + "---:|" * len(names),
        ]
        for k in rounds:
            cols = [_fmt([r["fit"][k][n] for r in cells if n in r["fit"].get(k, {})], 3) for n in names]
            out.append(f"| {k} | " + " | ".join(cols) + " |")
        out.append("")
    return out


def table3(records: Sequence[Mapping[str, Any]]) -> str:
    """Ablations beside CFDG on the same datasets, algorithms and seeds; an Average row."""
    abl = [r for r in records if r["ablation"]]
    if not abl:
        return "No ablation cells in this study.\n"
    names = list(dict.fromkeys(r["ablation"] for r in abl))
    rows = sorted({(r["dataset"], r["algo"]) for r in abl})
    cols = [*names, "cfdg"]
    lines = [
        "| Dataset | Algorithm | " + " | ".join(("CFDG" if c == "cfdg" else c) for c in cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    means: dict[str, list[float]] = defaultdict(list)
    for d, a in rows:
        cells = []
        for col in cols:
            xs = [
                r["final_score"]
                for r in records
                if r["dataset"] == d
                and r["algo"] == a
                and ((r["ablation"] == col) if col != "cfdg" else (not r["ablation"] and r["variant"] == "cfdg"))
            ]
            cells.append(_fmt(xs, 2))
            if xs:
                means[col].append(_mean_std(xs)[0])
        lines.append(f"| {d} | {a.upper()} | " + " | ".join(cells) + " |")
    if len(rows) > 1:
        lines.append(
            "| Average | | "
            + " | ".join(f"{sum(means[c]) / len(means[c]):.2f}" if len(means[c]) == len(rows) else "–" for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _stage_cost(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """stage key -> (wall s, peak MB) of the run that computed it (a cache checkout costs that run's time)."""
    cost = {}
    for r in records:
        for s in r["stages"].values():
            if "compute_wall_s" in s:
                cost[s["key"]] = (s["compute_wall_s"], s.get("compute_max_rss_mb", 0.0))
    return cost


def compute_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The paper's Table 6: online-phase wall time and peak memory per algorithm and variant."""
    if not records:
        return "No finished cells.\n"
    cost = _stage_cost(records)
    groups: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for r in records:
        online_s, peak, pre_s = 0.0, 0.0, 0.0
        for target, s in r["stages"].items():
            wall, rss = cost.get(s["key"], (s["wall_s"], s["max_rss_mb"]))
            if target.partition("@")[0] in ONLINE_STAGES:
                online_s += wall
                peak = max(peak, rss)
            elif target == "pretrain":
                pre_s = wall
        groups[(r["algo"], r["variant"])].append((online_s, peak, pre_s))
    lines = [
        "| Algorithm | Variant | Online phase wall time (s) | Peak memory, online phase (MB RSS) "
        "| Pretraining (s) | Cells |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (a, v), xs in sorted(groups.items(), key=lambda kv: (kv[0][0], order(kv[0][1]))):
        lines.append(
            f"| {a.upper()} | {_vname(v)} | {_fmt([x[0] for x in xs])} | "
            f"{max(x[1] for x in xs):.0f} | {_fmt([x[2] for x in xs])} | {len(xs)} |"
        )
    note = (
        "\nWall time of `dvc repro <stage>` summed over rollout, fit and materialise of every round (DVC's own "
        "start-up included); a stage one cell restored from the shared cache is charged what it cost the cell "
        "that computed it. Peak memory = the largest max RSS of one stage's process tree (CPU; no GPU counters).\n"
    )
    return "\n".join(lines) + "\n" + note


def curves_png(records: Sequence[Mapping[str, Any]], out: Path) -> Path | None:
    """One panel per (dataset, algorithm): mean score over seeds per variant, ± std band."""
    panels = sorted({(r["dataset"], r["algo"]) for r in records})
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = cfdg_report._figure(5.0 * cols, 3.6 * nrows)
    for i, (d, a) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        rs = [r for r in records if r["dataset"] == d and r["algo"] == a]
        for v in _variants(rs):
            by_step: dict[int, list[float]] = defaultdict(list)
            for r in rs:
                if r["variant"] == v:
                    for step, score in r["curve"]:
                        by_step[step].append(score)
            steps = sorted(by_step)
            stats = [_mean_std(by_step[s]) for s in steps]
            n = max(len(by_step[s]) for s in steps)
            (line,) = ax.plot(steps, [m for m, _ in stats], marker="o", label=f"{_vname(v)} (n={n})")
            ax.fill_between(
                steps, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2, color=line.get_color()
            )
        ax.set_title(f"{a.upper()} on {d}")
        ax.set_xlabel("online env steps")
        ax.set_ylabel("D4RL normalised score")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return cfdg_report._save(fig, out)


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The numbers behind the tables (no timings): what two runs of the same study must agree on."""
    out: dict[str, Any] = {}
    for r in sorted(records, key=lambda r: r["cell"]):
        out[r["cell"]] = {"curve": r["curve"], "quality": {str(k): v for k, v in sorted(r["quality"].items())}}
    return out


def stage_cost_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Measured cost per stage: mean wall seconds per round of rollout, fit and materialise, per
    variant, and the generator's share (fit + materialise) / rollout."""
    cost = _stage_cost(records)
    per: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for target, s in r["stages"].items():
            stage, _, k = target.partition("@")
            if stage in ROUND_STAGES and k:
                per[(r["algo"], r["variant"])][stage].append(cost.get(s["key"], (s["wall_s"], 0.0))[0])
    if not per:
        return "No finished cells.\n"
    lines = [
        "Wall seconds per round (mean ± sample std (n − 1) over cells and rounds):",
        "",
        "| Algorithm | Variant | Rollout | Fit | Materialise | (Fit + Materialise) / Rollout |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (a, v), st in sorted(per.items(), key=lambda kv: (kv[0][0], order(kv[0][1]))):
        means = {k: (sum(x) / len(x) if x else float("nan")) for k, x in st.items()}
        ratio = (means.get("fit", 0.0) + means.get("materialise", 0.0)) / means["rollout"] if "rollout" in means else 0
        lines.append(
            f"| {a.upper()} | {_vname(v)} | {_fmt(st['rollout'])} | {_fmt(st['fit'])} | "
            f"{_fmt(st['materialise'])} | {ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class WrittenReport:
    """What write_report wrote: report.md, and its summary line for the command to print."""

    path: Path
    summary: str  # "N of M cells finished (...); code <commit> (N cells); study file `...`."


def write_report(plan: Plan, mix_commits: bool = False) -> WrittenReport:
    """Write results/<name>/report/: report.md, table1/2/3.md, paired.md, compute.md, curves.png, results.json."""
    out = results_dir(plan.root, plan.study.name) / "report"
    got = collect(plan, mix_commits)
    records = got.records
    mixed = (
        f"**Mixed commits** ({got.commit_line()}): cells ran at different code; compare with care.\n\n"
        if got.mixed
        else ""
    )
    flags = pairing(records)
    parts = {
        "table1": mixed + table1(records),
        "table2": mixed + table2(records),
        "paired": mixed + paired_table(records) + ("\nPairing flags:\n\n" + "\n".join(flags) + "\n" if flags else ""),
        "table3": mixed + table3(records),
        "compute": mixed + compute_table(records) + "\n" + stage_cost_table(records),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, text in parts.items():
        atomic_write_text(out / f"{name}.md", text)
    png = curves_png(records, out / "curves.png")
    atomic_write_json(out / "results.json", aggregate(records))
    pairing_note = (
        f"Pairing: {len(flags)} seed(s) flagged (see the paired table)."
        if flags
        else "Pairing: the variants of every seed start from the same pretrained agent and round-1 data."
    )
    summary = (
        f"{len(records)} of {len(plan.study.cells)} cells finished"
        + (f" ({len(got.missing)} not yet: {', '.join(got.missing)})" if got.missing else "")
        + f"; {got.commit_line()}; study file `{plan.study.path}`."
    )
    md = [
        f"# Study {plan.study.name}",
        "",
        summary,
        "",
        pairing_note,
        "",
        "## Table 1: final score, base vs augmentations",
        "",
        parts["table1"],
        "## Paired differences over seeds (final score, D4RL-normalised; 95% t-interval)",
        "",
        parts["paired"],
        f"## Learning curves (mean ± {STD})",
        "",
        "![curves](curves.png)" if png else "(none yet)",
        "",
        "## Table 2: alignment and fidelity of generated data per round",
        "",
        parts["table2"],
        "## Table 3: ablations",
        "",
        parts["table3"],
        "## Compute (Table 6 form)",
        "",
        parts["compute"],
        "## Cells read",
        "",
        *[f"- `{p.relative_to(plan.root).as_posix()}`" for p in got.read],
        "",
    ]
    path = atomic_write_text(out / "report.md", "\n".join(md))
    return WrittenReport(path, summary)
