"""JS estimators on samples with known answers, the `cfdg quality` command and the t-SNE picture."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from cfdg.cli import main
from cfdg.errors import StoreError
from cfdg.quality import classifier_js, histogram_js, js_divergences
from cfdg.store import StoreMeta, Transitions, write_store
from cfdg.tsne import tsne_plot
from tests.conftest import make_transitions

LN2 = math.log(2)


def shifted(t: Transitions, shift: float) -> Transitions:
    return Transitions(
        **{
            **t.arrays(),
            "observations": t.observations + shift,
            "actions": t.actions + shift,
            "next_observations": t.next_observations + shift,
        }
    )


def test_same_distribution_is_near_zero():
    a, b = make_transitions(6000, seed=0), make_transitions(6000, seed=1)
    js = js_divergences(a, b, seed=0)
    assert set(js) == {"state", "action", "transition"}
    for part, est in js.items():
        assert 0 <= est["classifier"] < 0.01, (part, est)
        assert 0 <= est["histogram"] < 0.01, (part, est)


def test_disjoint_supports_are_near_ln2():
    a, b = make_transitions(4000, seed=0), make_transitions(4000, seed=1)
    js = js_divergences(a, shifted(b, 20.0), seed=0)
    for part in ("state", "action"):
        assert js[part]["classifier"] == pytest.approx(LN2, abs=0.01)
        assert js[part]["histogram"] == pytest.approx(LN2, abs=1e-6)
    # Rewards are unshifted: one of the transition's 2·5+3+1 = 14 dimensions matches.
    assert js["transition"]["histogram"] == pytest.approx(LN2 * 13 / 14, abs=0.01)
    assert js["transition"]["classifier"] > 0.68


def test_monotone_in_mean_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 4)), rng.normal(size=(4000, 4))
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    clf = [classifier_js(a, b + s, seed=0) for s in shifts]
    hist = [histogram_js(a, b + s) for s in shifts]
    assert all(x < y for x, y in itertools.pairwise(clf)), clf
    assert all(x < y for x, y in itertools.pairwise(hist)), hist
    # Exact JS of N(0,1) vs N(2,1) per dimension is ≈ 0.31 nats; the histogram estimate is close.
    assert hist[-1] == pytest.approx(0.31, abs=0.03)


def test_deterministic_and_subsampled():
    a, b = make_transitions(3000, seed=0), shifted(make_transitions(2500, seed=1), 0.3)
    assert js_divergences(a, b, seed=5, max_rows=1000) == js_divergences(a, b, seed=5, max_rows=1000)
    with pytest.raises(StoreError, match="candidate has 3 rows"):
        js_divergences(a, make_transitions(3), seed=0)
    with pytest.raises(StoreError, match="obs/act dims 5/3 differ from candidate 4/3"):
        js_divergences(a, make_transitions(100, obs_dim=4), seed=0)


def test_quality_command(tmp_path, capsys):
    ref = write_store(tmp_path / "online.zarr", make_transitions(2000, seed=0), StoreMeta("online", "toy", "t"))
    syn = make_transitions(2000, seed=1, labels=True)
    # Offline-labelled rows are far away; online-labelled rows match the reference.
    obs = np.where(syn.labels[:, None] == 0, syn.observations + 10, syn.observations)
    syn = Transitions(**{**syn.arrays(), "observations": obs.astype(np.float32)})
    cand = write_store(tmp_path / "syn.zarr", syn, StoreMeta("synthetic", "toy", "t"))

    assert main(["quality", "--reference", str(ref), "--candidate", str(cand), "--label", "online"]) == 0
    online = json.loads(capsys.readouterr().out)
    assert online["state"]["classifier"] < 0.02
    assert main(["quality", "--reference", str(ref), "--candidate", str(cand), "--label", "offline"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert offline["state"]["classifier"] > 0.68

    assert main(["quality", "--reference", str(ref), "--candidate", str(ref), "--label", "online"]) == 2
    assert "needs a synthetic store" in capsys.readouterr().err
    assert main(["quality", "--reference", str(tmp_path / "nope.zarr"), "--candidate", str(cand)]) == 2
    assert "nope.zarr: store does not exist" in capsys.readouterr().err


def test_tsne_plot(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    groups = {"offline": rng.normal(size=(300, 6)), "online": rng.normal(3, 1, size=(100, 6))}
    groups["generated"] = rng.normal(3, 1, size=(150, 6))
    out = tsne_plot(groups, tmp_path / "fig" / "tsne.png", seed=0, max_per_group=120, title="round 1")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list(out.parent.glob(".*tmp*"))  # atomic: no temporary left behind
    with pytest.raises(ValueError, match="different widths"):
        tsne_plot({"a": np.zeros((5, 2)), "b": np.zeros((5, 3))}, tmp_path / "x.png")
