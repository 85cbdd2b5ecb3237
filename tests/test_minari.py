"""Minari is optional: a clear error without it, a real round trip where it is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cfdg.cli import main
from cfdg.errors import DatasetError
from cfdg.minari_io import export_minari, import_minari
from cfdg.store import StoreMeta, read_store, write_store
from tests.conftest import make_transitions

HAS_MINARI = importlib.util.find_spec("minari") is not None


def chained_store(tmp_path):
    """Two Hopper-shaped episodes whose rows chain (s' of a row = s of the next)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(21, 11)).astype(np.float32)
    t = make_transitions(20, obs_dim=11, act_dim=3)
    arrays = {**t.arrays(), "observations": obs[:-1], "next_observations": obs[1:]}
    arrays["terminals"] = np.zeros(20, bool)
    arrays["terminals"][7] = True
    arrays["timeouts"] = np.zeros(20, bool)
    arrays["timeouts"][19] = True
    meta = StoreMeta(kind="offline", env_id="hopper", source="test")
    return write_store(tmp_path / "s.zarr", type(t).from_arrays(arrays), meta)


@pytest.mark.skipif(HAS_MINARI, reason="minari is installed; the missing-package error cannot happen")
def test_clear_error_without_minari(tmp_path, capsys):
    store = chained_store(tmp_path)
    for call in (lambda: export_minari(store, tmp_path / "m"), lambda: import_minari(tmp_path / "m", tmp_path / "o")):
        with pytest.raises(DatasetError, match=r"install cfdg\[minari\]"):
            call()
    assert main(["store", "export", str(store), "--format", "minari", "--out", str(tmp_path / "m")]) == 2
    assert "install cfdg[minari]" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()


def test_minari_round_trip(tmp_path):
    pytest.importorskip("minari")
    store = chained_store(tmp_path)
    out = export_minari(store, tmp_path / "m")
    back, attrs = read_store(import_minari(out, tmp_path / "o.zarr", env="hopper"))
    orig, _ = read_store(store)
    assert attrs["env_id"] == "hopper"
    for key, arr in orig.arrays().items():
        np.testing.assert_array_equal(getattr(back, key), arr, err_msg=key)
