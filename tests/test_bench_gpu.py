"""`bench/gpu.sh --tiny`: the GPU benchmark's whole path (kernels, a real round of `dvc repro`) on
CPU with tiny sizes, so the script handed to a lent GPU is known to run and to write what it says."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_bench_tiny_writes_every_quantity(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--tiny", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    readme = (out / "README.md").read_text()

    assert result["sizes"] == "tiny" and result["command"] == f"bench/gpu.sh --tiny --out {out}"
    for key in ("device", "torch", "commit", "date"):
        assert result[key] and result[key] in readme, key
    modes = {r["mode"] for r in result["diffusion"]}
    assert {"fp32", "bf16"} <= modes and ("bf16+compile" in modes) == (result["device_type"] == "cuda")
    for row in result["diffusion"]:
        assert positive(row["fit_steps_per_s"]) and positive(row["sampled_rows_per_s"]), row
    assert {(r["algo"], r["precision"]) for r in result["agents"]} == {
        (a, p) for a in ("iql", "pex", "apl") for p in ("fp32", "bf16")
    }
    assert all(positive(r["update_ms"]) for r in result["agents"]), result["agents"]
    assert [r["stage"] for r in result["round"]] == ["dataset", "pretrain", "rollout@1", "fit@1", "materialise@1"]
    assert all(r["status"] == "ok" and positive(r["wall_s"]) for r in result["round"]), result["round"]
    assert "| mode | width x depth | fit steps/s" in readme and "| materialise@1 |" in readme
    assert positive(result["seconds"]) and proc.stdout.count("| apl (cql) |") == 2
