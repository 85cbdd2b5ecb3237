"""Dataset cards (issue 19): written inside every store, shown by `store info`, checked by `store verify`,
carried through D4RL / Minari exports and back. Real Zarr stores, real HDF5 files, the real stage code."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from cfdg.card import CARD_KEY, array_sha256
from cfdg.cli import main
from cfdg.errors import StoreError
from cfdg.io import digest
from cfdg.store import MANIFEST, StoreMeta, StoreWriter, read_attrs, read_store, write_store
from tests.conftest import make_transitions

OBS, ACT = 11, 3  # hopper
QUALITY = {
    "offline_vs_online": {"state": {"classifier": 0.31}, "transition": {"classifier": 0.42}},
    "generated_vs_online": {"state": {"classifier": 0.05}, "transition": {"classifier": 0.09}},
    "fidelity": {"generated": {"next_state_rel_error": 0.12}, "online": {"next_state_rel_error": 0.0}},
    "memorisation": {"ratio": 0.97},
}


def synthetic(tmp: Path, name: str = "s.zarr", rows: int = 100) -> Path:
    meta = StoreMeta(
        kind="synthetic",
        env_id="hopper",
        source="test",
        round=2,
        params={"variant": "cfdg", "sampling": {"n_rows": rows, "steps": 64, "guidance_w": 1.0}},
        inputs={"diffusion": "a" * 64, "online": "b" * 64},
        card={"generator": {"variant": "cfdg", "fit_steps": 5000, "config": {"width": 256}}},
    )
    data = make_transitions(rows, OBS, ACT, labels=True)
    return write_store(tmp / name, data, meta, chunk_rows=32, annotate=lambda _: {"quality": QUALITY})


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def set_attr(store: Path, key: str, value: object) -> None:
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"][key] = value
    (store / "zarr.json").write_text(json.dumps(doc))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- the card inside the store --------------------------------------------------------------------


def test_card_records_counts_settings_inputs_and_value_digests(tmp_path):
    path = synthetic(tmp_path)
    data, attrs = read_store(path)
    card = attrs[CARD_KEY]
    assert card["kind"] == "synthetic" and card["round"] == 2 and card["env_id"] == "hopper"
    assert card["rows"] == 100 and card["obs_dim"] == OBS and card["act_dim"] == ACT
    online = int(data.labels.sum())
    assert card["labels"] == {"offline": 100 - online, "online": online} and 0 < online < 100
    assert card["settings"]["sampling"]["n_rows"] == 100 and card["generator"]["fit_steps"] == 5000
    assert card["inputs"] == {"diffusion": "a" * 64, "online": "b" * 64}
    assert card["code_version"] == attrs["code_version"] and card["quality"] == QUALITY
    for name, arr in data.arrays().items():
        assert card["arrays"][name] == {"dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": array_sha256(arr)}
    assert not list(tmp_path.glob(".*tmp-*"))


def test_empty_store_has_a_card_and_verifies(tmp_path, capsys):
    """Round 0's stores and variant `none`'s synthetic store hold no rows; they still carry a card."""
    from stages.stores import empty_transitions

    meta = StoreMeta(kind="synthetic", env_id="hopper", source="test")
    path = write_store(tmp_path / "e.zarr", empty_transitions(OBS, ACT, labels=True), meta)
    card = read_attrs(path)[CARD_KEY]
    assert card["rows"] == 0 and card["labels"] == {"offline": 0, "online": 0}
    empty = hashlib.sha256(b"").hexdigest()
    assert card["arrays"]["observations"] == {"dtype": "float32", "shape": [0, OBS], "sha256": empty}
    assert run(capsys, "store", "verify", str(path))[0] == 0
    assert run(capsys, "store", "info", str(path))[0] == 0


def test_card_is_reproducible_and_carries_no_clock(tmp_path):
    a, b = synthetic(tmp_path, "a.zarr"), synthetic(tmp_path, "b.zarr")
    assert files(a) == files(b)
    text = json.dumps(read_attrs(a)[CARD_KEY]).replace("timeouts", "")
    assert not any(word in text for word in ("time", "date", "seconds", "2026", "2025"))


def test_failing_annotate_leaves_no_store_and_no_temp(tmp_path):
    old = synthetic(tmp_path)
    before = files(old)

    def boom(tmp: Path) -> dict:
        assert read_attrs(tmp)["counts"]["rows"] == 10  # it sees the complete temporary store
        raise StoreError("quality failed")

    meta = StoreMeta(kind="synthetic", env_id="hopper", source="test")
    with pytest.raises(StoreError, match="quality failed"):
        write_store(old, make_transitions(10, OBS, ACT, labels=True), meta, annotate=boom)
    assert files(old) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_append_gives_the_grown_store_its_own_card(tmp_path):
    meta = StoreMeta(kind="online", env_id="hopper", source="online:iql", round=1)
    first = write_store(tmp_path / "r1.zarr", make_transitions(64, OBS, ACT), meta, chunk_rows=32)
    with StoreWriter(
        tmp_path / "r2.zarr", StoreMeta(kind="online", env_id="hopper", source="x", round=2), OBS, ACT
    ) as w:
        for block in (read_store(first)[0], make_transitions(30, OBS, ACT, seed=3)):
            w.append(block)
    card = read_attrs(tmp_path / "r2.zarr")[CARD_KEY]
    data, _ = read_store(tmp_path / "r2.zarr")
    assert card["rows"] == 94 and card["arrays"]["rewards"]["sha256"] == array_sha256(data.rewards)


# --- store info -----------------------------------------------------------------------------------


def test_info_prints_the_card_for_a_person(tmp_path, capsys):
    path = synthetic(tmp_path)
    rc, out, err = run(capsys, "store", "info", str(path))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) <= 40
    text = "\n".join(lines)
    card = read_attrs(path)[CARD_KEY]
    assert f"labels: {card['labels']['offline']} offline, {card['labels']['online']} online" in text
    assert "round 2" in text and "variant cfdg" in text and "n_rows 100" in text
    js = next(line for line in lines if "JS state" in line)
    assert "nats" in js and "0.05" in js and "0.31" in js  # generated beside the offline reference
    assert "0.97" in next(line for line in lines if "memorisation" in line)
    assert "agree" in text and "data values not checked" in text and "cfdg store validate" in text
    assert "chunk_sha256" not in text and "c/0" not in text


def test_info_json_is_the_full_record(tmp_path, capsys):
    path = synthetic(tmp_path)
    rc, out, _ = run(capsys, "store", "info", str(path), "--json")
    record = json.loads(out)
    assert rc == 0 and record["card"] == read_attrs(path)[CARD_KEY]
    assert record["problems"] == [] and record["data_checked"] is False and "validate" in record["note"]
    assert MANIFEST not in record["attrs"] and CARD_KEY not in record["attrs"]
    assert record["arrays"]["labels"]["chunk_files"] == 4


def test_store_without_card_says_so_in_one_line(tmp_path, capsys):
    path = synthetic(tmp_path)
    doc = json.loads((path / "zarr.json").read_text())
    del doc["attributes"][CARD_KEY]
    (path / "zarr.json").write_text(json.dumps(doc))
    rc, out, _ = run(capsys, "store", "info", str(path))
    assert rc == 0
    assert len([line for line in out.splitlines() if "written before dataset cards" in line]) == 1
    assert "100" in out
    rc, _, err = run(capsys, "store", "verify", str(path))
    assert rc == 2 and "has no dataset card" in err and len(err.strip().splitlines()) == 1


def _rows_601(s: Path) -> None:
    doc = json.loads((s / "zarr.json").read_text())
    doc["attributes"]["counts"]["rows"] = 101
    (s / "zarr.json").write_text(json.dumps(doc))


def _empty_chunk(s: Path) -> None:
    (s / "rewards" / "c" / "1").write_bytes(b"")


def _card_rows(s: Path) -> None:
    doc = json.loads((s / "zarr.json").read_text())
    doc["attributes"][CARD_KEY]["rows"] = 90
    (s / "zarr.json").write_text(json.dumps(doc))


def _shrunk_array(s: Path) -> None:
    doc = json.loads((s / "actions" / "zarr.json").read_text())
    doc["shape"][0] = 64  # two chunk files now lie beyond the shape; the manifest still lists four
    (s / "actions" / "zarr.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "shown"),
    [
        (_rows_601, "attribute counts.rows is 101, arrays hold 100 rows"),
        (_empty_chunk, "array 'rewards' chunk c/1 is empty (0 bytes)"),
        (_card_rows, "card says 90 rows, attribute counts.rows is 100"),
        (_shrunk_array, "array 'actions' has 2 chunk file(s) beyond its shape [64, 3]"),
        (lambda s: (s / "labels" / "c" / "3").unlink(), "array 'labels' chunk c/3 is missing"),
    ],
)
def test_info_reports_what_disagrees_and_exits_2(tmp_path, capsys, damage, shown):
    path = synthetic(tmp_path)
    damage(path)
    before = files(path)
    rc, out, err = run(capsys, "store", "info", str(path))
    assert rc == 2
    assert shown in out and "DISAGREEMENTS" in out and "data values not checked" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert files(path) == before


def test_info_does_not_claim_to_have_checked_values(tmp_path, capsys):
    """A NaN reward passes `info` (it reads no data) but the output says so; validate catches it."""
    path = synthetic(tmp_path)
    arr = zarr.open_array(str(path / "rewards"), mode="r+")
    arr[5] = np.nan
    rc, out, _ = run(capsys, "store", "info", str(path))
    assert rc == 0 and "data values not checked" in out
    rc, _, err = run(capsys, "store", "validate", str(path))
    assert rc == 2 and "non-finite" in err


# --- store verify ---------------------------------------------------------------------------------


def test_verify_accepts_the_store_its_card_describes(tmp_path, capsys):
    path = synthetic(tmp_path)
    rc, out, _ = run(capsys, "store", "verify", str(path))
    card = read_attrs(path)[CARD_KEY]
    assert rc == 0 and f"matches its card: 100 rows ({card['labels']['offline']} offline" in out


def _change_reward(s: Path) -> None:
    arr = zarr.open_array(str(s / "rewards"), mode="r+")
    arr[7] = arr[7] + 1.0  # a finite value: `validate` (without --deep) cannot tell


def _relabel(s: Path) -> None:
    arr = zarr.open_array(str(s / "labels"), mode="r+")
    arr[:] = 1


def _truncate_consistently(s: Path) -> None:
    """Cut the store to 64 rows and fix attributes and manifest, as a careful tamperer would; not the card."""
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "labels"):
        zarr.open_array(str(s / name), mode="r+").resize((64, *zarr.open_array(str(s / name)).shape[1:]))
    doc = json.loads((s / "zarr.json").read_text())
    attrs = doc["attributes"]
    labels = zarr.open_array(str(s / "labels"))[...]
    attrs["counts"] = {"rows": 64, "online": int(labels.sum()), "offline": 64 - int(labels.sum())}
    for name, chunks in attrs[MANIFEST].items():
        attrs[MANIFEST][name] = {k: v for k, v in chunks.items() if k.split("/")[1] in ("0", "1")}
    (s / "zarr.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "culprit"),
    [
        (_change_reward, "array 'rewards' does not match the sha256 its card records"),
        (_relabel, "labels, its card says"),
        (_truncate_consistently, "card says 100 rows, attribute counts.rows is 64"),
        (lambda s: (s / "observations" / "c" / "0" / "0").write_bytes(b"\x00" * 10), "cannot be read"),
        (_empty_chunk, "chunk c/1 is empty"),
    ],
)
def test_verify_refuses_a_tampered_or_truncated_store_in_one_line(tmp_path, capsys, damage, culprit):
    path = synthetic(tmp_path)
    damage(path)
    rc, out, err = run(capsys, "store", "verify", str(path))
    lines = err.strip().splitlines()
    assert rc == 2 and out == ""
    assert len(lines) == 1 and culprit in lines[0] and "s.zarr" in lines[0], err


# --- store card (Markdown) ------------------------------------------------------------------------


def test_card_markdown_to_stdout_and_file(tmp_path, capsys):
    path = synthetic(tmp_path)
    rc, out, _ = run(capsys, "store", "card", str(path))
    assert rc == 0 and out.startswith("---\n") and "task_categories:\n- reinforcement-learning" in out
    assert "## Dataset specs" in out and "## Quality" in out and "| JS state vs online | nats" in out
    assert read_attrs(path)[CARD_KEY]["arrays"]["rewards"]["sha256"] in out
    target = tmp_path / "README.md"
    rc, printed, _ = run(capsys, "store", "card", str(path), "-o", str(target))
    assert rc == 0 and target.read_text() == out and printed.strip() == str(target)
    rc, _, err = run(capsys, "store", "card", str(path), "-o", str(target))  # exists: refused
    assert rc == 2 and "already exists" in err and target.read_text() == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "s.zarr"]


# --- exports carry the card -----------------------------------------------------------------------


def test_d4rl_export_carries_the_card_and_import_keeps_it(tmp_path, capsys):
    from cfdg.d4rl import export_d4rl, import_d4rl

    path = synthetic(tmp_path)
    card = read_attrs(path)[CARD_KEY]
    out = export_d4rl(path, tmp_path / "s.hdf5")
    with h5py.File(out, "r") as f:
        assert json.loads(f["metadata"].attrs[CARD_KEY]) == card
    back = import_d4rl(out, tmp_path / "back.zarr", env="hopper")
    imported = read_attrs(back)[CARD_KEY]
    assert imported["kind"] == "offline" and imported["source_card"] == card
    assert imported["source_arrays_changed"] == [] and imported["source_card"]["quality"] == QUALITY
    rc, text, _ = run(capsys, "store", "info", str(back))
    assert rc == 0 and "synthetic hopper round 2, 100 rows; arrays match it" in text
    assert "0.05" in next(line for line in text.splitlines() if "JS state" in line)  # the producer's figures

    with h5py.File(out, "r+") as f:  # someone edits the rewards after export
        f["rewards"][3] = 99.0
    again = read_attrs(import_d4rl(out, tmp_path / "edited.zarr", env="hopper"))[CARD_KEY]
    assert again["source_arrays_changed"] == ["rewards"]


def test_d4rl_file_with_a_garbage_card_is_refused_naming_it(tmp_path):
    from cfdg.d4rl import export_d4rl, import_d4rl
    from cfdg.errors import DatasetError

    out = export_d4rl(synthetic(tmp_path), tmp_path / "s.hdf5")
    with h5py.File(out, "r+") as f:
        f["metadata"].attrs[CARD_KEY] = "{not json"
    with pytest.raises(DatasetError, match=r"s.hdf5: metadata attribute 'card' is not a cfdg dataset card"):
        import_d4rl(out, tmp_path / "back.zarr", env="hopper")
    assert not (tmp_path / "back.zarr").exists()


@pytest.mark.skipif(importlib.util.find_spec("minari") is None, reason="minari is not installed")
def test_minari_export_carries_the_card_and_import_keeps_it(tmp_path):
    from cfdg.minari_io import METADATA_CARD, export_minari, import_minari

    meta = StoreMeta(kind="online", env_id="hopper", source="online:iql", round=1)
    path = write_store(tmp_path / "on.zarr", make_transitions(60, OBS, ACT), meta)
    card = read_attrs(path)[CARD_KEY]
    out = export_minari(path, tmp_path / "m")
    metadata = json.loads((out / "data" / "metadata.json").read_text())
    assert metadata[METADATA_CARD] == card
    assert metadata["description"].startswith("---\n") and "## Dataset specs" in metadata["description"]
    imported = read_attrs(import_minari(out, tmp_path / "back.zarr", env="hopper"))[CARD_KEY]
    # Minari cuts episodes where s' is not the next row's s and marks each cut a truncation: random rows
    # come back as one-step episodes, so `timeouts` differs and the import says so.
    assert imported["source_card"] == card and imported["source_arrays_changed"] == ["timeouts"]


# --- materialise: the round's quality inside the store ----------------------------------------------


def test_materialise_measures_quality_on_the_store_and_puts_it_inside(tmp_path):
    from cfdg.config import from_mapping
    from cfdg.diffusion.checkpoint import save_diffusion
    from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
    from cfdg.diffusion.variants.registry import get_variant
    from cfdg.quality import QualityConfig
    from stages.jsonfiles import plain
    from stages.materialise import materialise_stage

    off_data, on_data = make_transitions(200, OBS, ACT, seed=1), make_transitions(120, OBS, ACT, seed=2)
    offline = write_store(tmp_path / "off.zarr", off_data, StoreMeta(kind="offline", env_id="hopper", source="t"))
    online = write_store(tmp_path / "on.zarr", on_data, StoreMeta(kind="online", env_id="hopper", source="t", round=1))
    dcfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 1, "train_steps": 2, "batch_size": 16}, "d")
    model, _ = get_variant("cfdg").fit(off_data, on_data, dcfg, seed=0, progress=False)
    ckpt = save_diffusion(model, tmp_path / "diffusion.pt")
    sampling = from_mapping(SamplingConfig, {"n_rows": 64, "steps": 2, "batch": 64}, "s")
    qcfg = QualityConfig(max_rows=50, fidelity_rows=20)

    def materialise(out: Path) -> dict:
        return materialise_stage(ckpt, offline, online, sampling, qcfg, 0, 1, out, progress=False)

    quality = materialise(tmp_path / "r1" / "synthetic.zarr")
    card = read_attrs(tmp_path / "r1" / "synthetic.zarr")[CARD_KEY]
    assert card["quality"] == json.loads(json.dumps(plain(quality)))
    assert {"offline_vs_online", "generated_vs_online", "fidelity", "memorisation"} <= set(card["quality"])
    assert card["generator"]["variant"] == "cfdg" and card["generator"]["config"]["width"] == 32
    assert card["inputs"]["diffusion"] == digest(ckpt) and card["inputs"]["online"] == digest(online)
    assert card["settings"]["sampling"]["n_rows"] == 64 and card["rows"] == 64
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["materialise.provenance.json", "synthetic.zarr"]
    materialise(tmp_path / "again" / "synthetic.zarr")
    assert files(tmp_path / "r1" / "synthetic.zarr") == files(tmp_path / "again" / "synthetic.zarr")
    shutil.rmtree(tmp_path / "again")
