"""Transition stores: round trips, byte identity, chunk dedupe, validation errors, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from cfdg import store
from cfdg.cli import main
from cfdg.errors import StoreError
from cfdg.store import StoreMeta, StoreWriter, Transitions, append_store, read_store, write_store
from tests.conftest import make_transitions


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_keeps_every_value(tmp_path, transitions, meta):
    path = write_store(tmp_path / "s.zarr", transitions, meta, chunk_rows=256)
    back, attrs = read_store(path)
    for name, arr in transitions.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), arr)
        assert getattr(back, name).dtype == arr.dtype
    assert attrs["kind"] == "offline" and attrs["counts"] == {"rows": 1000}
    assert attrs["params"] == {"a": 1} and attrs["schema_version"] == store.SCHEMA_VERSION
    assert not list(tmp_path.glob(".*tmp-*")), "temporary directory left behind"


def test_same_inputs_give_byte_identical_stores(tmp_path, transitions, meta):
    a = write_store(tmp_path / "a.zarr", transitions, meta, chunk_rows=128)
    b = write_store(tmp_path / "b.zarr", transitions, meta, chunk_rows=128)
    assert files(a) == files(b)
    other = write_store(tmp_path / "c.zarr", transitions, dataclasses.replace(meta, seed=1), chunk_rows=128)
    assert files(a) != files(other)


def test_append_keeps_earlier_chunk_files_identical(tmp_path, meta):
    first = make_transitions(512, seed=1)
    more = make_transitions(300, seed=2)
    a = write_store(tmp_path / "r1.zarr", first, meta, chunk_rows=128)
    b = append_store(a, more, tmp_path / "r2.zarr", dataclasses.replace(meta, round=2))
    fa, fb = files(a), files(b)
    chunk_files = [k for k in fa if "/c/" in k]
    assert len(chunk_files) >= 4 * 5  # timeouts are all False: empty chunks are not written
    for k in chunk_files:
        assert fb[k] == fa[k], k
    back, _ = read_store(b)
    assert len(back) == 812
    np.testing.assert_array_equal(back.rewards[512:], more.rewards)


def test_synthetic_store_counts_labels(tmp_path):
    data = make_transitions(500, labels=True)
    meta = StoreMeta(kind="synthetic", env_id="hopper", source="diffusion")
    _, attrs = read_store(write_store(tmp_path / "syn.zarr", data, meta))
    assert attrs["counts"]["online"] == int(data.labels.sum())
    assert attrs["counts"]["offline"] + attrs["counts"]["online"] == 500


def test_writer_crash_leaves_previous_store_intact(tmp_path, transitions, meta):
    path = write_store(tmp_path / "s.zarr", transitions, meta)
    before = files(path)
    with pytest.raises(RuntimeError, match="boom"), StoreWriter(path, meta, 5, 3) as w:
        w.append(make_transitions(10, seed=9))
        raise RuntimeError("boom")
    assert files(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(rewards=np.full(10, np.nan, np.float32)), "'rewards' has 10 non-finite"),
        (lambda a: a.update(actions=np.zeros((9, 3), np.float32)), "'actions' has 9 rows"),
        (lambda a: a.update(observations=np.zeros(10, np.float32)), "'observations' has rank 1"),
        (lambda a: a.update(terminals=np.zeros(10, np.float32)), "'terminals' has dtype float32"),
        (lambda a: a.pop("timeouts"), "missing array 'timeouts'"),
        (lambda a: a.update(next_observations=np.zeros((10, 4), np.float32)), "'next_observations' has width 4"),
    ],
)
def test_validation_names_the_bad_array(change, message):
    arrays = make_transitions(10).arrays()
    change(arrays)
    with pytest.raises(StoreError, match=message):
        store.validate_arrays(arrays, "x.zarr")


def corrupt_array(path: Path, name: str, value: np.ndarray) -> None:
    g = zarr.open_group(str(path), mode="r+")
    g[name][:] = value


def test_reader_rejects_corrupted_stores(tmp_path, transitions, meta):
    good = write_store(tmp_path / "good.zarr", transitions, meta)

    nan = tmp_path / "nan.zarr"
    shutil.copytree(good, nan)
    corrupt_array(nan, "observations", np.full((1000, 5), np.inf, np.float32))
    with pytest.raises(StoreError, match=r"nan.zarr: array 'observations' has 5000 non-finite"):
        read_store(nan)

    missing = tmp_path / "missing.zarr"
    shutil.copytree(good, missing)
    shutil.rmtree(missing / "actions")
    with pytest.raises(StoreError, match=r"missing.zarr: missing array 'actions'"):
        read_store(missing)

    version = tmp_path / "version.zarr"
    shutil.copytree(good, version)
    zarr.open_group(str(version), mode="r+").attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema_version is 99"):
        read_store(version)

    garbage = tmp_path / "garbage.zarr"
    garbage.mkdir()
    (garbage / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="garbage.zarr"):
        read_store(garbage)

    with pytest.raises(StoreError, match="does not exist"):
        read_store(tmp_path / "nowhere.zarr")


def test_labels_must_be_binary():
    arrays = make_transitions(10, labels=True).arrays()
    arrays["labels"] = np.full(10, 2, np.uint8)
    with pytest.raises(StoreError, match="'labels'"):
        Transitions.from_arrays(arrays)


def test_iter_store_streams_all_rows(tmp_path, transitions, meta):
    path = write_store(tmp_path / "s.zarr", transitions, meta, chunk_rows=100)
    blocks = list(store.iter_store(path, batch_rows=300))
    assert [len(b) for b in blocks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(Transitions.concat(blocks).observations, transitions.observations)


def test_cli_info_and_validate(tmp_path, transitions, meta, capsys):
    path = write_store(tmp_path / "s.zarr", transitions, meta)
    assert main(["store", "info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["arrays"]["observations"]["shape"] == [1000, 5]
    assert out["card"]["rows"] == 1000 and out["problems"] == [] and out["data_checked"] is False
    assert main(["store", "validate", str(path)]) == 0
    assert "valid offline store, 1000 rows" in capsys.readouterr().out

    corrupt_array(path, "rewards", np.full(1000, np.nan, np.float32))
    assert main(["store", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'rewards'" in err[0] and "s.zarr" in err[0]


# --- integrity (issue 10) -------------------------------------------------------------------------


def test_every_chunk_is_recorded_and_a_lost_one_never_reads_as_zeros(tmp_path, meta):
    data = make_transitions(100)
    data = Transitions(**{**data.arrays(), "terminals": np.zeros(100, bool)})  # all-zero chunks: written too
    path = write_store(tmp_path / "s.zarr", data, meta, chunk_rows=32)
    manifest = store.read_attrs(path)[store.MANIFEST]
    assert sorted(manifest["terminals"]) == ["c/0", "c/1", "c/2", "c/3"]
    assert sorted(manifest["observations"]) == ["c/0/0", "c/1/0", "c/2/0", "c/3/0"]
    read_store(path, deep=True)
    (path / "terminals" / "c" / "2").unlink()
    with pytest.raises(StoreError, match=r"s.zarr: array 'terminals' chunk c/2 is missing"):
        read_store(path)
    with pytest.raises(StoreError, match="chunk c/2 is missing"):
        list(store.iter_store(path))


def test_store_without_manifest_is_checked_against_its_shape(tmp_path, meta):
    path = write_store(tmp_path / "s.zarr", make_transitions(50), meta, chunk_rows=16)
    doc = json.loads((path / "zarr.json").read_text())
    del doc["attributes"][store.MANIFEST]
    (path / "zarr.json").write_text(json.dumps(doc))
    assert len(read_store(path, deep=True)[0]) == 50  # all chunks there: readable as before
    (path / "rewards" / "c" / "3").unlink()
    with pytest.raises(StoreError, match=r"chunk c/3 is missing \(store predates chunk manifests"):
        read_store(path)


def test_expected_chunk_keys():
    assert store.expected_chunks((0, 5), (16, 5)) == []
    assert store.expected_chunks((33,), (16,)) == ["c/0", "c/1", "c/2"]
    assert store.expected_chunks((3, 4), (2, 3)) == ["c/0/0", "c/0/1", "c/1/0", "c/1/1"]


def test_next_write_removes_a_killed_writes_temporaries(tmp_path, meta):
    stale_dir = tmp_path / ".s.zarr.tmp-deadbeef"
    stale_dir.mkdir()
    (stale_dir / "zarr.json").write_text("{}")
    other = tmp_path / ".t.zarr.tmp-deadbeef"  # another output's temp: not ours to remove
    other.mkdir()
    write_store(tmp_path / "s.zarr", make_transitions(10), meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".t.zarr.tmp-deadbeef", "s.zarr"]


def test_import_replaces_an_existing_store_only_with_force(tmp_path, meta):
    src = write_store(tmp_path / "a.zarr", make_transitions(40, obs_dim=11, act_dim=3), meta)
    h5 = tmp_path / "hopper.hdf5"
    assert main(["store", "export", str(src), "--out", str(h5)]) == 0
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["dataset", "import", str(h5), "--out", str(out)]) == 2
    assert (out / "mine.txt").read_text() == "keep"
    assert main(["dataset", "import", str(h5), "--out", str(out), "--force"]) == 0
    assert len(read_store(out)[0]) == 40 and not (out / "mine.txt").exists()
    assert main(["store", "validate", "--deep", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
