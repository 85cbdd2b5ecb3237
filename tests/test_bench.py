"""The cost benchmarks run on a real finished tiny project and report what they claim to."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from pipeline_project import ROOT, finished_project, tree_digests


def test_round_cost_times_every_phase_and_measures_quality_before_and_after(tmp_path_factory):
    """bench/round_cost.py on the tiny run's round 1: every phase timed, ratios and quality in its
    last JSON line, the `--after` setting really used, and the project left as it was."""
    project = finished_project(tmp_path_factory)
    before = tree_digests(project / "artifacts")
    proc = subprocess.run(
        [
            sys.executable,
            "bench/round_cost.py",
            "--default",
            str(project),
            "--round",
            "1",
            "--seeds",
            "2",
            "--after",
            "sampling.steps=6",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    b = result["default"]
    phases = {"fit", "sampling", "store writes", "quality measurement", "start-up (fit, materialise)"}
    for label in ("before", "after"):
        assert set(b[label]["phases"]) == phases
        assert all(v > 0 and math.isfinite(v) for v in b[label]["phases"].values())
        assert b[label]["method_over_rollout"] == b[label]["method_s"] / b["rollout_s"]
    assert b["method_over_rollout"] == b["after"]["method_over_rollout"] > 0
    for m in ("next_state_rel_error", "state_js_fresh"):
        q = result["quality"][m]
        assert set(q) == {"before", "after", "before_std", "after_std"} and all(math.isfinite(v) for v in q.values())
    # 6 sampler steps instead of the preset's 8: other samples, so other errors, on the same fits' data
    errs = {lab: [r["next_state_rel_error"] for r in b[lab]["per_seed"]] for lab in ("before", "after")}
    assert errs["before"] != errs["after"]
    assert "| (fit + materialise) / rollout |" in proc.stdout
    assert tree_digests(project / "artifacts") == before
