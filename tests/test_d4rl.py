"""D4RL HDF5 import/export on real files written with h5py in D4RL's layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cfdg.cli import main
from cfdg.d4rl import export_d4rl, find_d4rl_file, import_d4rl, load_d4rl_hdf5
from cfdg.errors import DatasetError
from cfdg.store import StoreMeta, read_store, write_store
from tests.conftest import make_transitions


def d4rl_arrays() -> dict[str, np.ndarray]:
    """Three episodes in 7 rows: A = rows 0-2 ends by timeout, B = rows 3-4 ends terminal, C = 5-6 cut by file end."""
    return {
        "observations": np.arange(14, dtype=np.float32).reshape(7, 2),
        "actions": np.linspace(-1, 1, 7, dtype=np.float32)[:, None],
        "rewards": np.arange(7, dtype=np.float32) * 10,
        "terminals": np.array([0, 0, 0, 0, 1, 0, 0], bool),
        "timeouts": np.array([0, 0, 1, 0, 0, 0, 0], bool),
    }


def hopper_arrays() -> dict[str, np.ndarray]:
    """d4rl_arrays() widened to hopper's 11 (obs) / 3 (action) columns, so an import passes the env check."""
    a = d4rl_arrays()
    a["observations"] = np.repeat(a["observations"], [6, 5], axis=1)
    a["actions"] = np.repeat(a["actions"], 3, axis=1)
    return a


def write_h5(path: Path, arrays: dict[str, np.ndarray], extras: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        if extras:  # as in D4RL files; must be ignored
            f.create_dataset("infos/qpos", data=np.zeros((len(arrays["rewards"]), 3)))
            f.create_group("metadata").attrs["algorithm"] = "SAC"
    return path


def test_derived_next_observations_and_timeouts_match_qlearning_dataset(tmp_path):
    t = load_d4rl_hdf5(write_h5(tmp_path / "a.hdf5", d4rl_arrays()))
    # qlearning_dataset keeps rows i < N-1 with timeouts[i] == 0: 0, 1, 3, 4, 5.
    obs = np.arange(14, dtype=np.float32).reshape(7, 2)
    np.testing.assert_array_equal(t.observations, obs[[0, 1, 3, 4, 5]])
    np.testing.assert_array_equal(t.next_observations, obs[[1, 2, 4, 5, 6]])
    np.testing.assert_array_equal(t.rewards, [0, 10, 30, 40, 50])
    np.testing.assert_array_equal(t.actions[:, 0], np.linspace(-1, 1, 7, dtype=np.float32)[[0, 1, 3, 4, 5]])
    np.testing.assert_array_equal(t.terminals, [False, False, False, True, False])
    # Episode A's rows end at row 1 (row 2 dropped) and C's at row 5 (row 6 dropped); B ends terminal.
    np.testing.assert_array_equal(t.timeouts, [False, True, False, False, True])
    assert t.observations.dtype == np.float32 and t.terminals.dtype == bool


def test_stored_next_observations_are_ignored_like_d4rl_unless_asked(tmp_path):
    arrays = d4rl_arrays()
    arrays["next_observations"] = arrays["observations"] + 100
    path = write_h5(tmp_path / "a.hdf5", arrays)
    derived = load_d4rl_hdf5(path)
    np.testing.assert_array_equal(derived.next_observations, arrays["observations"][[1, 2, 4, 5, 6]])
    exact = load_d4rl_hdf5(path, next_obs="file")
    assert len(exact) == 7
    np.testing.assert_array_equal(exact.next_observations, arrays["next_observations"])
    np.testing.assert_array_equal(exact.timeouts, arrays["timeouts"])


def _malformed(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.hdf5"
    a = d4rl_arrays()
    if case == "not_hdf5":
        path.write_text("observations,actions\n1,2\n")
        return path
    if case == "truncated":
        big = {k: np.repeat(v, 2000, axis=0) for k, v in a.items()}
        write_h5(path, big)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    if case == "missing_timeouts":
        del a["timeouts"]
    elif case == "mismatched_rewards":
        a["rewards"] = a["rewards"][:5]
    elif case == "rank_observations":
        a["observations"] = a["observations"][:, 0]
    elif case == "nan_rewards":
        a["rewards"][3] = np.nan
    elif case == "inf_actions":
        a["actions"][2, 0] = np.inf
    elif case == "string_actions":
        a["actions"] = np.array([b"x"] * 7)
    elif case == "flag_terminals":
        a["terminals"] = np.array([0, 0, 2, 0, 0, 0, 0])
    return write_h5(path, a)


MALFORMED = {
    "not_hdf5": "not a readable HDF5 file",
    "truncated": "",
    "missing_timeouts": "missing key 'timeouts'",
    "mismatched_rewards": "key 'rewards' has 5 rows",
    "rank_observations": "key 'observations' has rank 1",
    "nan_rewards": "key 'rewards' has 1 NaN/inf value(s), first at row 3",
    "inf_actions": "key 'actions' has 1 NaN/inf value(s), first at row 2",
    "string_actions": "key 'actions' has non-numeric dtype",
    "flag_terminals": "key 'terminals' must hold only 0/1",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_naming_file_and_key_and_write_nothing(tmp_path, case):
    path = _malformed(tmp_path, case)
    out = tmp_path / "out.zarr"
    with pytest.raises(DatasetError) as err:
        import_d4rl(path, out)
    msg = str(err.value)
    assert str(path) in msg and MALFORMED[case] in msg
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers either


def test_find_d4rl_file_uses_d4rl_naming_and_dataset_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(DatasetError) as err:
        find_d4rl_file("hopper-medium-replay-v2")
    assert str(tmp_path / "hopper_medium_replay-v2.hdf5") in str(err.value)
    assert str(tmp_path / "hopper-medium-replay-v2.hdf5") in str(err.value)
    url_style = write_h5(tmp_path / "hopper_medium_replay-v2.hdf5", d4rl_arrays())
    assert find_d4rl_file("hopper-medium-replay-v2") == url_style
    plain = write_h5(tmp_path / "walker2d-medium-v2.hdf5", d4rl_arrays())
    assert find_d4rl_file("walker2d-medium-v2") == plain


def test_find_d4rl_file_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    home_dir = tmp_path / ".d4rl" / "datasets"
    home_dir.mkdir(parents=True)
    f = write_h5(home_dir / "halfcheetah_medium_expert-v2.hdf5", d4rl_arrays())
    assert find_d4rl_file("halfcheetah-medium-expert-v2") == f


def test_import_by_name_writes_offline_store_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    f = write_h5(tmp_path / "hopper_medium_replay-v2.hdf5", hopper_arrays())
    out = import_d4rl("hopper-medium-replay-v2", tmp_path / "s.zarr", seed=3)
    data, attrs = read_store(out)
    assert len(data) == 5
    assert attrs["kind"] == "offline" and attrs["env_id"] == "hopper" and attrs["seed"] == 3
    assert attrs["source"] == "hopper-medium-replay-v2"
    from cfdg.io import digest

    assert attrs["inputs"] == {"dataset": digest(f)}


def test_export_round_trip_keeps_every_value(tmp_path):
    data = make_transitions(3000, obs_dim=11, act_dim=3, seed=1)
    data = type(data)(**{**data.arrays(), "timeouts": np.arange(3000) % 997 == 0})
    meta = StoreMeta(kind="offline", env_id="hopper", source="x", seed=5, params={"k": 1})
    store = write_store(tmp_path / "a.zarr", data, meta, chunk_rows=1024)
    h5 = export_d4rl(store, tmp_path / "out" / "a.hdf5")
    with h5py.File(h5, "r") as f:
        assert {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"} <= set(f)
        assert f["metadata"].attrs["env_id"] == "hopper" and f["metadata"].attrs["seed"] == 5
        assert f["terminals"].dtype == bool and f["observations"].shape == (3000, 11)
    back, attrs = read_store(import_d4rl(h5, tmp_path / "b.zarr"))
    assert attrs["env_id"] == "hopper"
    for key, arr in data.arrays().items():
        np.testing.assert_array_equal(getattr(back, key), arr, err_msg=key)


def test_export_of_synthetic_store_keeps_labels(tmp_path):
    data = make_transitions(100, labels=True)
    store = write_store(tmp_path / "s.zarr", data, StoreMeta(kind="synthetic", env_id="hopper", source="gen"))
    h5 = export_d4rl(store, tmp_path / "s.hdf5")
    back = load_d4rl_hdf5(h5)
    np.testing.assert_array_equal(back.labels, data.labels)
    np.testing.assert_array_equal(back.next_observations, data.next_observations)


def test_cli_store_export_and_dataset_import(tmp_path, capsys):
    meta = StoreMeta(kind="offline", env_id="hopper", source="t")
    store = write_store(tmp_path / "a.zarr", make_transitions(50, obs_dim=11, act_dim=3), meta)
    h5 = tmp_path / "a.hdf5"
    assert main(["store", "export", str(store), "--format", "d4rl", "--out", str(h5)]) == 0
    assert h5.is_file()
    assert main(["dataset", "import", str(h5), "--out", str(tmp_path / "b.zarr")]) == 0
    assert "b.zarr" in capsys.readouterr().out
    np.testing.assert_array_equal(read_store(tmp_path / "b.zarr")[0].rewards, read_store(store)[0].rewards)
    bad = _malformed(tmp_path, "nan_rewards")
    assert main(["dataset", "import", str(bad), "--out", str(tmp_path / "c.zarr")]) == 2
    assert "nan_rewards.hdf5: key 'rewards'" in capsys.readouterr().err
    assert not (tmp_path / "c.zarr").exists()
