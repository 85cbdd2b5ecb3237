"""Sharing a round's synthetic dataset between teams: a DVC remote, push, pull, import, export.

Two real git repositories and a local directory remote, exactly the commands of docs/dataset-card.md's
"Share a synthetic dataset" section.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
from pipeline_project import ROOT, clone, commit, dvc, finished_project, sh, tree_digests

from cfdg.card import CARD_KEY
from cfdg.io import digest
from cfdg.store import read_attrs, read_store


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The producing team's repo with its run pushed to a local remote."""
    base = tmp_path_factory.mktemp("sharing")
    producer = clone(finished_project(tmp_path_factory), base / "producer")
    remote = base / "remote"
    dvc(producer, "remote", "add", "-d", "shared", str(remote))
    commit(producer, "use the shared DVC remote")
    dvc(producer, "push")
    return producer, remote


@pytest.mark.slow
def test_push_then_pull_in_a_fresh_clone_restores_every_artifact(shared, tmp_path):
    producer, remote = shared
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    consumer = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(producer), str(consumer))
    assert not (consumer / "artifacts").exists()
    dvc(consumer, "pull")
    assert tree_digests(consumer / "artifacts") == tree_digests(producer / "artifacts")
    assert "up to date" in dvc(consumer, "status").stdout


@pytest.mark.slow
def test_another_project_imports_round_synthetic_store_validates_and_exports_d4rl(shared, tmp_path):
    producer, _ = shared
    other = tmp_path / "other-team"
    other.mkdir()
    sh(other, "git", "init", "-q")
    dvc(other, "init", "-q")
    src = "artifacts/rounds/2/synthetic.zarr"
    dvc(other, "import", str(producer), src, "-o", "synthetic-r2.zarr")
    assert (other / "synthetic-r2.zarr.dvc").is_file()  # the import is pinned to the producer's commit
    assert digest(other / "synthetic-r2.zarr") == digest(producer / src)

    cfdg = (sys.executable, "-m", "cfdg", "store")  # run from this project: the other team has cfdg installed
    ok = sh(ROOT, *cfdg, "validate", str(other / "synthetic-r2.zarr"))
    assert "valid synthetic store" in ok.stdout

    # The store explains itself: the card came with it, with the producer's quality figures (quality.json
    # stayed behind in the producer's repo), and the data match it.
    produced = json.loads((producer / "artifacts/rounds/2/quality.json").read_text())
    shown = sh(ROOT, *cfdg, "info", str(other / "synthetic-r2.zarr"))
    lines = shown.stdout.splitlines()
    assert len(lines) <= 40 and "round 2" in lines[1] and "data values not checked" in shown.stdout
    js = next(line for line in lines if "JS state vs online" in line)
    assert f"{produced['generated_vs_online']['state']['classifier']:.4g}" in js
    assert f"{produced['offline_vs_online']['state']['classifier']:.4g}" in js
    record = json.loads(sh(ROOT, *cfdg, "info", "--json", str(other / "synthetic-r2.zarr")).stdout)
    card = record["card"]
    assert card["quality"] == produced and card["round"] == 2 and record["problems"] == []
    assert card["inputs"]["diffusion"] == digest(producer / "artifacts/rounds/2/diffusion.pt")
    assert card["generator"]["variant"] == card["settings"]["variant"]
    assert card["labels"]["online"] + card["labels"]["offline"] == card["rows"] > 0
    assert "matches its card" in sh(ROOT, *cfdg, "verify", str(other / "synthetic-r2.zarr")).stdout
    md = sh(ROOT, *cfdg, "card", str(other / "synthetic-r2.zarr"), "-o", str(other / "README.md"))
    assert md.stdout.strip() == str(other / "README.md") and "## Quality" in (other / "README.md").read_text()

    out = other / "synthetic-r2.hdf5"
    sh(ROOT, *cfdg, "export", str(other / "synthetic-r2.zarr"), "--format", "d4rl", "--out", str(out))
    data, _ = read_store(other / "synthetic-r2.zarr")
    with h5py.File(out, "r") as f:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            assert key in f, key
        assert f["observations"].shape == data.observations.shape
        np.testing.assert_array_equal(f["actions"][...], data.actions)
        assert json.loads(f["metadata"].attrs[CARD_KEY]) == card  # the card goes out with the export
    back = other / "back.zarr"
    sh(ROOT, sys.executable, "-m", "cfdg", "dataset", "import", str(out), "--out", str(back))
    assert read_attrs(back)[CARD_KEY]["source_card"]["quality"] == produced

    # `dvc get` for a one-off copy without tracking.
    dvc(other, "get", str(producer), src, "-o", "copy.zarr")
    assert digest(other / "copy.zarr") == digest(producer / src)
