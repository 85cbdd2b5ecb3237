"""Stage `report`: learning curve, per-round quality, t-SNE and Table 1 under artifacts/report/.

Reads only what the rounds wrote (metrics, quality and provenance JSONs, the last round's
stores) and turns it into pictures and tables with the pure functions of cfdg.report.
`python -m stages.report --table runs/*/summary.json` builds Table 1 across several runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cfdg import report, store
from cfdg.diffusion.variants.registry import display_name
from cfdg.errors import ConfigError
from cfdg.io import atomic_write_text
from cfdg.quality import QualityConfig, fresh_quality
from cfdg.tsne import tsne_plot
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import write_metrics
from stages.provenance import derive_seed, provenance
from stages.runner import run_main

# The learning-curve fields every pretrain/rollout metrics file carries (stages.metrics.score_fields).
SCORE_KEYS = ("normalized_score",)
STD_KEYS = ("normalized_score_std",)
STEP_KEYS = ("env_steps_total",)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (has the stage that writes it run?)") from None


def _first(metrics: Mapping[str, Any], keys: Sequence[str], where: Path, default: Any = ...) -> Any:
    for key in keys:
        if metrics.get(key) is not None:
            return metrics[key]
    if default is ...:
        raise ConfigError(f"{where}: none of the keys {list(keys)} found; has {sorted(metrics)}")
    return default


def curve_point(metrics: Mapping[str, Any], where: Path) -> report.CurvePoint:
    """The learning-curve point a stage's metrics describe (round 0 = the pretrained agent)."""
    return report.CurvePoint(
        env_steps=int(_first(metrics, STEP_KEYS, where)),
        score=float(_first(metrics, SCORE_KEYS, where)),
        std=float(_first(metrics, STD_KEYS, where, 0.0) or 0.0),
        round=int(metrics.get("round", 0)),
    )


def _tsne_features(data: store.Transitions) -> np.ndarray:
    return np.concatenate(
        [data.observations, data.actions, data.rewards[:, None], data.next_observations], axis=1
    ).astype(np.float32)


def fresh_alignment(
    rounds_dir: Path, offline: store.Transitions, rounds: Sequence[int], cfg: QualityConfig
) -> dict[int, dict[str, Any]]:
    """Each round k against round k+1's fresh online rows (cfdg.quality.fresh_quality): only the report sees both."""
    out: dict[int, dict[str, Any]] = {}
    ordered = sorted(rounds)
    for k, later in itertools.pairwise(ordered):
        online, _ = store.read_store(rounds_dir / str(k) / layout.ONLINE)
        later_online, _ = store.read_store(rounds_dir / str(later) / layout.ONLINE)
        generated, _ = store.read_store(rounds_dir / str(k) / layout.SYNTHETIC)
        result = fresh_quality(online, later_online, offline, generated, cfg)
        if result is not None:
            out[k] = result
    return out


def make_report(
    rounds_dir: Path,
    offline: Path,
    rounds: Sequence[int],
    cfg: params.ReportParams,
    out_dir: Path,
    quality_cfg: QualityConfig | None = None,
) -> dict:
    """Write the report files into `out_dir`; returns the run summary (summary.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    last = max(rounds)
    points = []
    for k in [0, *rounds]:
        path = rounds_dir / str(k) / layout.score_file(k)
        points.append(curve_point(_read_json(path), path))
    quality = [_read_json(rounds_dir / str(k) / layout.QUALITY) for k in rounds]

    pre = _read_json(rounds_dir / "0" / "pretrain.provenance.json")["params"]
    fit = _read_json(rounds_dir / str(last) / "fit.provenance.json")["params"]
    attrs = store.read_attrs(offline)
    algo, variant, seed = (
        str(pre["agent"].get("algo", "?")),
        str(fit["diffusion"].get("variant", "?")),
        int(pre["seed"]),
    )
    dataset = str(attrs["source"]).removeprefix("cfdg-built:")
    label = f"{algo.upper()}-{display_name(variant)}"
    title = cfg.title or f"{label} on {dataset} (seed {seed})"

    report.learning_curve_png({label: points}, out_dir / "learning_curve.png", title=title)
    write_json(
        out_dir / "learning_curve.json",
        [{"env_steps": p.env_steps, "score": p.score, "std": p.std, "round": p.round} for p in points],
    )

    rows = report.quality_rows(quality)
    write_json(out_dir / "quality.json", rows)
    atomic_write_text(out_dir / "quality.md", report.quality_markdown(rows))
    report.quality_png(rows, out_dir / "quality.png")

    offline_data, _ = store.read_store(offline)
    fresh = fresh_alignment(rounds_dir, offline_data, rounds, quality_cfg or QualityConfig())
    truth = report.ground_truth_rows(quality, fresh)
    write_json(out_dir / "fresh.json", {str(k): v for k, v in fresh.items()})
    write_json(out_dir / "ground_truth.json", truth)
    atomic_write_text(out_dir / "ground_truth.md", report.ground_truth_markdown(truth))
    report.ground_truth_png(truth, out_dir / "ground_truth.png")
    online_data, _ = store.read_store(rounds_dir / str(last) / layout.ONLINE)
    generated, _ = store.read_store(rounds_dir / str(last) / layout.SYNTHETIC)
    groups = {"offline": _tsne_features(offline_data), "online": _tsne_features(online_data)}
    if len(generated):
        groups["generated"] = _tsne_features(generated)
    tsne_plot(
        groups,
        out_dir / "tsne.png",
        seed=derive_seed(seed, last, "tsne"),
        max_per_group=cfg.tsne_max_per_group,
        title=f"t-SNE, round {last}: offline / online / generated",
    )

    summary = {
        "dataset": dataset,
        "algo": algo,
        "variant": variant,
        "seed": seed,
        "rounds": len(rounds),
        "env_steps": points[-1].env_steps,
        "pretrain_score": points[0].score,
        "final_score": points[-1].score,
        "final_score_std": points[-1].std,
    }
    # summary.json is the run's record for Table 1 (`--table`), text included; its numbers are the metrics.
    # Before report.md: dvclive's Live() deletes a report.md in its directory (its own report's name).
    write_json(out_dir / "summary.json", summary)
    write_metrics(out_dir, {k: v for k, v in summary.items() if k != "seed"}, log_name=None)
    inputs = {
        "offline": offline,
        "online": rounds_dir / str(last) / layout.ONLINE,
        "synthetic": rounds_dir / str(last) / layout.SYNTHETIC,
        **{f"round{k}-rollout": rounds_dir / str(k) / layout.score_file(k) for k in rounds},
        **{f"round{k}-quality": rounds_dir / str(k) / layout.QUALITY for k in rounds},
    }
    recorded = {
        "rounds": list(rounds),
        "report": dataclasses.asdict(cfg),
        "quality": dataclasses.asdict(quality_cfg or QualityConfig()),
    }
    write_json(out_dir / "report.provenance.json", provenance("report", inputs, recorded))
    table1 = report.table1_markdown([summary])
    atomic_write_text(out_dir / "table1.md", table1)
    atomic_write_text(out_dir / "report.md", report_markdown(summary, rows, table1, title, truth))
    return summary


def report_markdown(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    table1: str,
    title: str,
    truth: Sequence[Mapping[str, Any]] = (),
) -> str:
    return "\n".join(
        [
            f"# cfdg report: {title}",
            "",
            f"Pretrained score {summary['pretrain_score']:.1f}; after {summary['rounds']} round(s) "
            f"({summary['env_steps']} online env steps): {summary['final_score']:.1f} "
            f"± {summary['final_score_std']:.1f} (D4RL normalised).",
            "",
            "## Learning curve",
            "",
            "![learning curve](learning_curve.png)",
            "",
            "## Quality of generated data (Table 2 form)",
            "",
            report.quality_markdown(rows),
            "![quality](quality.png)",
            "",
            "## Ground truth: alignment to fresh data, simulator fidelity, memorisation",
            "",
            report.ground_truth_markdown(truth) if truth else "(no round measured)\n",
            "![ground truth](ground_truth.png)",
            "",
            "## t-SNE of offline, online and generated data (Figure 1 form)",
            "",
            "![t-SNE](tsne.png)",
            "",
            "## Table 1 form (runs present)",
            "",
            table1,
        ]
    )


def table_main(paths: Sequence[str], out: str | None) -> int:
    """`--table`: Table 1 from several runs' summary.json files."""
    summaries = [_read_json(Path(p)) for p in paths]
    text = report.table1_markdown(summaries)
    if out:
        atomic_write_text(out, text)
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--table":
        parser = argparse.ArgumentParser(prog="python -m stages.report --table")
        parser.add_argument("summaries", nargs="+", help="summary.json files of several runs")
        parser.add_argument("--out", help="also write the Markdown table here")
        args = parser.parse_args(argv[1:])
        try:
            return table_main(args.summaries, args.out)
        except (ConfigError, KeyError, ValueError) as e:
            print(f"report --table: error: {e}", file=sys.stderr)
            return 2

    def body(args: argparse.Namespace) -> None:
        raw = params.read_params(args.params)
        rounds = list(params.rounds(raw, args.params))
        cfg = params.section(raw, "report", params.ReportParams, args.params)
        quality = params.section(raw, "quality", QualityConfig, args.params)
        make_report(layout.ROUNDS_DIR, layout.OFFLINE, rounds, cfg, layout.REPORT_DIR, quality)

    return run_main("report", body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
