"""Report functions on known numbers, and the report a real tiny run writes."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from matplotlib.image import imread
from pipeline_project import finished_project, sh

from cfdg import report

QUALITY = [
    {
        "round": 2,
        "offline_vs_online": {d: {"classifier": 0.6, "histogram": 0.5} for d in report.DIVERGENCES},
        "generated_vs_online": {d: {"classifier": 0.3, "histogram": 0.25} for d in report.DIVERGENCES},
    },
    {
        "round": 1,
        "offline_vs_online": {d: {"classifier": 0.65, "histogram": 0.55} for d in report.DIVERGENCES},
    },
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_project(tmp_path_factory)


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def test_learning_curve_png_is_deterministic(tmp_path):
    point = report.CurvePoint
    pts = [point(0, 20.0, 1.0, 0), point(300, 30.0, 2.0, 1), point(600, 45.0, 2.5, 2)]
    a = report.learning_curve_png(
        {"IQL-CFDG": pts, "IQL-Base": [report.CurvePoint(0, 20.0), report.CurvePoint(600, 35.0)]}, tmp_path / "a.png"
    )
    b = report.learning_curve_png(
        {"IQL-CFDG": pts, "IQL-Base": [report.CurvePoint(0, 20.0), report.CurvePoint(600, 35.0)]}, tmp_path / "b.png"
    )
    img = _png(a)
    assert img.shape[:2] == (400, 600) and img.std() > 0.01  # something is drawn
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError):
        report.learning_curve_png({}, tmp_path / "c.png")


def test_learning_curve_keeps_the_d4rl_scale_and_marks_the_pretrained_score():
    """Scores near 1 with a 0.3 spread stay a flat line on 0..100, not a zig-zag filling the plot."""
    point = report.CurvePoint
    pts = [point(0, 1.2, 0.0, 0), point(300, 0.9, 0.3, 1), point(600, 1.4, 0.2, 2)]
    ax = report.learning_curve_figure({"IQL-CFDG": pts}).axes[0]
    assert ax.get_ylim() == (0.0, 100.0)
    refs = [line for line in ax.get_lines() if line.get_label() == "IQL-CFDG pretrained"]
    assert len(refs) == 1 and list(refs[0].get_ydata()) == [1.2, 1.2]
    # a point beyond the scale widens the axis past it instead of clipping the point
    assert report.score_limits({"x": [point(0, 110.0, 4.0), point(1, -3.0)]}) == (-8.0, 119.0)


def test_quality_rows_flatten_in_round_order_and_mark_missing_generated():
    rows = report.quality_rows(QUALITY)
    assert [(r["round"], r["divergence"]) for r in rows] == [(k, d) for k in (1, 2) for d in report.DIVERGENCES]
    assert rows[0]["offline"] == 0.65 and rows[0]["generated"] is None
    assert rows[3]["generated"] == 0.3 and rows[3]["generated_histogram"] == 0.25


def test_quality_markdown_and_png(tmp_path):
    rows = report.quality_rows(QUALITY)
    md = report.quality_markdown(rows)
    assert "| 1 | State | 0.65 (0.55) | – (–) |" in md
    assert "| 2 | Transition | 0.60 (0.50) | 0.30 (0.25) |" in md
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + len(rows)  # header + rows
    _png(report.quality_png(rows, tmp_path / "q.png"))


def _summary(dataset, algo, variant, seed, score):
    return {"dataset": dataset, "algo": algo, "variant": variant, "seed": seed, "final_score": score}


def test_table1_mean_std_over_seeds_and_best_in_bold():
    runs = [
        _summary("hopper-medium-replay", "iql", "none", 0, 60.0),
        _summary("hopper-medium-replay", "iql", "none", 1, 70.0),
        _summary("hopper-medium-replay", "iql", "cfdg", 0, 80.0),
        _summary("hopper-medium-replay", "iql", "cfdg", 1, 90.0),
        _summary("walker2d-medium", "iql", "none", 0, 50.0),
        _summary("walker2d-medium", "apl", "cfdg", 0, 40.0),
    ]
    table = report.table1_markdown(runs)
    lines = table.strip().splitlines()
    assert lines[0] == "| Dataset | IQL Base | IQL CFDG | APL Base | APL CFDG |"
    assert lines[2] == "| hopper-medium-replay | 65.0 ± 5.0 (n=2) | **85.0 ± 5.0 (n=2)** | – | – |"
    assert lines[3] == "| walker2d-medium | 50.0 ± 0.0 (n=1) | – | – | 40.0 ± 0.0 (n=1) |"
    assert lines[4] == "| Total | 115.0 | – | – | – |"
    mean, std, n = report.aggregate(runs)[("hopper-medium-replay", "iql", "cfdg")]
    assert (mean, n) == (85.0, 2) and math.isclose(std, 5.0)
    with pytest.raises(ValueError):
        report.table1_markdown([])


@pytest.mark.slow
def test_report_of_a_real_run(finished, tmp_path):
    rep = finished / "artifacts" / "report"
    for name in ("learning_curve.png", "quality.png", "tsne.png"):
        img = _png(rep / name)
        assert img.std() > 0.01, name
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["algo"] == "iql" and summary["variant"] == "cfdg" and summary["rounds"] == 2
    curve = json.loads((rep / "learning_curve.json").read_text())
    assert [p["round"] for p in curve] == [0, 1, 2] and curve[0]["env_steps"] == 0
    assert np.all(np.diff([p["env_steps"] for p in curve]) > 0)
    assert summary["final_score"] == curve[-1]["score"]
    quality = json.loads((rep / "quality.json").read_text())
    assert len(quality) == 3 * 2 and all(r["generated"] is not None for r in quality)
    prov = json.loads((rep / "report.provenance.json").read_text())
    assert prov["params"]["rounds"] == [1, 2] and "round2-quality" in prov["inputs"]
    md = (rep / "report.md").read_text()
    for needle in ("learning_curve.png", "tsne.png", "| Round | Divergence |", "| Dataset | IQL CFDG |"):
        assert needle in md
    # Ground truth: round 1 is also measured against round 2's fresh rows; real rows replay exactly.
    truth = {(r["round"], r["data"]): r for r in json.loads((rep / "ground_truth.json").read_text())}
    assert truth[(1, "generated")]["js_state_fresh"] is not None and truth[(2, "generated")]["js_state_fresh"] is None
    assert truth[(1, "generated")]["memorisation_fresh"] > 0 and truth[(2, "online")]["next_state_rel_error"] <= 0.01
    assert "ground_truth.png" in md and _png(rep / "ground_truth.png").std() > 0.01

    # Table 1 across runs: this run plus a made-up base run of another seed.
    other = tmp_path / "base.json"
    other.write_text(json.dumps({**summary, "variant": "none", "seed": 1, "final_score": summary["final_score"] - 5}))
    out = sh(
        finished,
        sys.executable,
        "-m",
        "pipeline",
        "table",
        str(rep / "summary.json"),
        str(other),
        "--out",
        str(tmp_path / "t.md"),
    )
    assert "| Dataset | IQL Base | IQL CFDG |" in out.stdout
    assert (tmp_path / "t.md").read_text() == out.stdout
