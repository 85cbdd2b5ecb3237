"""SIGKILL a real `dvc repro` inside every kind of stage and inside a store's temporary write;
the rerun must end byte-identical to an uninterrupted run (artifacts and dvc.lock), with no
temporary left anywhere.

Cheap by construction: one project is killed once per point in turn (each rerun continues where
the killed one stopped, so the kills cost about one extra stage each), and the uninterrupted
reference is the suite's shared tiny run (`finished_project`). The kills are deterministic: the
stage SIGKILLs itself at a named point through the test-only hook CFDG_KILL_AT (cfdg.io.kill_point).
"""

from __future__ import annotations

import signal

import pytest
from pipeline_project import dvc, finished_project, make_project, tree_digests

# stage id : point. dataset dies with its store complete in a temporary directory, not yet renamed.
KILLS = (
    "dataset:temp-dir",
    "pretrain:temp-file",
    "rollout@1:temp-dir",
    "fit@1:start",
    "materialise@1:temp-dir",
    "rollout@2:end",
    "fit@2:temp-file",
    "materialise@2:end",
    "report:temp-file",
)


def temps(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*.tmp-*"))


@pytest.mark.parametrize("kills", [KILLS])
def test_killed_repro_recovers_byte_identical(kills, tmp_path, tmp_path_factory):
    reference = finished_project(tmp_path_factory)
    repo = make_project(tmp_path / "project")
    assert {point.split(":")[0].split("@")[0] for point in kills} >= {
        "dataset",
        "pretrain",
        "rollout",
        "fit",
        "materialise",
        "report",
    }
    left_behind = []
    for point in kills:
        proc = dvc(repo, "repro", check=False, CFDG_KILL_AT=point)
        stage = point.split(":")[0]
        assert proc.returncode != 0, f"{point}: the run was not killed\n{proc.stdout[-2000:]}"
        out = proc.stdout + proc.stderr
        assert f"'{stage}'" in out and (f"-{signal.SIGKILL}" in out or "SIGKILL" in out or "killed" in out.lower()), (
            f"{point}: expected {stage} to die of SIGKILL\n{out[-3000:]}"
        )
        left_behind += temps(repo / "artifacts")
    # the temp-dir / temp-file kills left complete temporaries where the next write of the output looks
    assert any(".offline.zarr.tmp-" in t for t in left_behind), left_behind
    dvc(repo, "repro")
    assert temps(repo) == [], "a temporary of a killed write was left behind"
    assert (repo / "dvc.lock").read_bytes() == (reference / "dvc.lock").read_bytes()
    got, want = tree_digests(repo / "artifacts"), tree_digests(reference / "artifacts")
    assert got == want, sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
