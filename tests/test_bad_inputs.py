"""The bad-input catalogue (issue 10): real damaged HDF5 files, Zarr stores, params files and
checkpoints given to the real commands. Every case must exit 2 with exactly one stderr line that
names the culprit, print no traceback and no warning, and leave every file as it was (nothing
written, nothing deleted).

Commands run in-process through `pipeline.cli.main` (the `cfdg` command) or a stage's `main`
(what `python -m stages.<name>` runs); `test_real_entry_points` repeats a few as subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from pipeline_project import ROOT

from cfdg.fake_data import make_transitions
from cfdg.store import MANIFEST, StoreMeta, write_store

N_OBS, N_ACT = 11, 3  # hopper


# --- good inputs, damaged copies ---------------------------------------------------------------


def hopper_arrays(n: int = 60) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[[29, n - 1]] = True
    return {
        "observations": rng.normal(size=(n, N_OBS)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, N_ACT)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }


def write_h5(path: Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        if meta:
            for key, value in meta.items():
                f.require_group("metadata").attrs[key] = value
    return path


def h5_with(tmp: Path, name: str = "hopper-bad.hdf5", meta: dict | None = None, **changes) -> Path:
    arrays = hopper_arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value(arrays) if callable(value) else value
    return write_h5(tmp / name, arrays, meta)


def good_store(tmp: Path, name: str = "s.zarr", kind: str = "offline") -> Path:
    """100 hopper rows in chunks of 32: 4 chunk files per array."""
    data = make_transitions(100, obs_dim=N_OBS, act_dim=N_ACT, labels=kind == "synthetic")
    return write_store(tmp / name, data, StoreMeta(kind=kind, env_id="hopper", source="test"), chunk_rows=32)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def set_attr(store: Path, key: str, value: object) -> None:
    edit_json(store / "zarr.json", lambda d: d["attributes"].__setitem__(key, value))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def params_text(**sections) -> str:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(sections)
    return yaml.safe_dump(raw, sort_keys=False)


def write_params(tmp: Path, text: str) -> Path:
    (tmp / "params.yaml").write_text(text)
    return tmp / "params.yaml"


class Evil:
    """A pickle that would create a file when unpickled: a weights-only load must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_payload(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"format": "cfdg-agent/1", "x": Evil(path.parent / "PWNED")}))
    return path


@pytest.fixture(scope="module")
def diffusion_ckpt(tmp_path_factory) -> Path:
    """A real diffusion checkpoint of a width-32 denoiser fitted for 2 steps on hopper-wide rows."""
    from cfdg.config import from_mapping
    from cfdg.diffusion.checkpoint import save_diffusion
    from cfdg.diffusion.config import DiffusionConfig
    from cfdg.diffusion.variants.registry import get_variant

    data = make_transitions(64, obs_dim=N_OBS, act_dim=N_ACT)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 1, "train_steps": 2, "batch_size": 16}, "d")
    model, _ = get_variant("cfdg").fit(data, data, cfg, seed=0, progress=False)
    return save_diffusion(model, tmp_path_factory.mktemp("ckpt") / "diffusion.pt")


def stage_project(tmp: Path, diffusion: Path | None = None) -> Path:
    """The inputs of round 1's fit and materialise stages, as a tiny project would hold them."""
    shutil.copy(ROOT / "params.yaml", tmp / "params.yaml")
    shutil.copytree(ROOT / "configs", tmp / "configs")
    subprocess.run(
        [sys.executable, "-m", "pipeline", "preset", "configs/tiny.yaml"],
        cwd=tmp,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    shutil.rmtree(tmp / "configs")
    art = tmp / "artifacts"
    good_store(art / "dataset", "offline.zarr")
    good_store(art / "rounds" / "1", "online.zarr", kind="online")
    good_store(art / "rounds" / "0", "synthetic.zarr", kind="synthetic")
    if diffusion is not None:
        shutil.copy(diffusion, art / "rounds" / "1" / "diffusion.pt")
    return tmp


# --- the catalogue ----------------------------------------------------------------------------------


@dataclass
class Case:
    """`setup(tmp, ckpt)` builds the damaged input and returns (argv, culprit); `stage` runs a stage's main.

    `also`: more text the line must hold (what the message says, beside whom it names); `once`: text
    the line must hold exactly once (a file named twice reads as two files)."""

    setup: Callable[[Path, Path], tuple[list[str], str]]
    stage: str | None = None
    also: tuple[str, ...] = ()
    once: str | None = None


def imp(src: str | Path, out: Path, *extra: str) -> list[str]:
    return ["dataset", "import", str(src), "--out", str(out), *extra]


def h5_case(
    name: str = "hopper-bad.hdf5", meta: dict | None = None, extra: tuple = (), also: tuple = (), **changes
) -> Case:
    def setup(tmp: Path, _: Path) -> tuple[list[str], str]:
        return imp(h5_with(tmp, name, meta, **changes), tmp / "out.zarr", *extra), name

    return Case(setup, also=also)


def store_case(command: str, damage: Callable[[Path], None], culprit: str, kind: str = "offline") -> Case:
    def setup(tmp: Path, _: Path) -> tuple[list[str], str]:
        store = good_store(tmp, kind=kind)
        damage(store)
        argv = ["store", command, str(store)]
        if command == "export":
            argv += ["--out", str(tmp / "x.hdf5")]
        if command == "deep":
            argv = ["store", "validate", "--deep", str(store)]
        return argv, culprit

    return Case(setup)


def params_case(text: str | Callable[[Path], str], culprit: str, command: str = "check") -> Case:
    def setup(tmp: Path, _: Path) -> tuple[list[str], str]:
        path = write_params(tmp, text(tmp) if callable(text) else text)
        argv = {"check": ["check", "--params", str(path)], "run": ["run", "--root", str(tmp)]}[command]
        return argv, culprit

    return Case(setup)


# a round this short, should a refusal regress, runs in seconds instead of 100,000 env steps
SHORT_ROUND = ("rollout.steps=20", "rollout.warmup_steps=10", "rollout.eval_episodes=1", "rollout.chunk_rows=10")


def agent_ckpt_case(make: Callable[[Path], Path], culprit: str, *sets: str, once: str | None = None) -> Case:
    def setup(tmp: Path, ckpt: Path) -> tuple[list[str], str]:
        store = good_store(tmp, "off.zarr")
        bad = make(tmp) if make is not None else ckpt
        argv = ["agent", "round", str(bad), str(store), "--round", "1", "--out", str(tmp / "a.pt"), "--no-progress"]
        for item in (*SHORT_ROUND, *sets):
            argv += ["--set", item]
        return [*argv, "--out-online-store", str(tmp / "on.zarr")], culprit

    return Case(setup, once=once)


_PRETRAINED: dict[str, bytes] = {}


def pretrained_agent(tmp: Path, change: Callable[[dict], None] | None = None) -> Path:
    """tmp/agent.pt: a real IQL checkpoint (2 offline steps on good_store's hopper rows, built once per
    session and kept as bytes), with `change` applied to the loaded dict before it is saved again."""
    if not _PRETRAINED:
        from cfdg.agents.config import PretrainConfig
        from cfdg.agents.registry import agent_config
        from cfdg.agents.train import pretrain

        work = tmp / "pretrain-work"
        store = good_store(work, "pre.zarr")
        cfg = agent_config({"algo": "iql", "hidden_dims": (16, 16), "batch_size": 16, "device": "cpu"})
        pretrain(store, cfg, PretrainConfig(steps=2, eval_every=0, eval_episodes=1), work / "agent.pt", 0, False)
        _PRETRAINED["iql"] = (work / "agent.pt").read_bytes()
        shutil.rmtree(work)
    path = tmp / "agent.pt"
    path.write_bytes(_PRETRAINED["iql"])
    if change is not None:
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)
    return path


def _agent_with(change: Callable[[dict], None]) -> Callable[[Path], Path]:
    return lambda tmp: pretrained_agent(tmp, change)


def _set(key: str, value: object) -> Callable[[dict], None]:
    """Set ckpt[key]; a dotted key reaches into a nested dict (agent.obs_mean)."""

    def change(ckpt: dict) -> None:
        *outer, last = key.split(".")
        target = ckpt
        for k in outer:
            target = target[k]
        target[last] = value

    return change


def stage_case(stage: str, damage: Callable[[Path, Path], None], culprit: str, once: str | None = None) -> Case:
    def setup(tmp: Path, ckpt: Path) -> tuple[list[str], str]:
        stage_project(tmp, ckpt)
        damage(tmp, tmp / "artifacts" / "rounds" / "1")
        return ["--round", "1"], culprit

    return Case(setup, stage=stage, once=once)


def _rm(rel: str) -> Callable[[Path], None]:
    return lambda store: (store / rel).unlink()


def _dtype64(store: Path) -> None:
    edit_json(store / "rewards" / "zarr.json", lambda d: d.__setitem__("data_type", "float64"))


def _legacy_missing(store: Path) -> None:
    edit_json(store / "zarr.json", lambda d: d["attributes"].pop(MANIFEST))
    (store / "rewards" / "c" / "1").unlink()


def _flip_chunk(store: Path) -> None:
    """Same length, other bytes: only the recorded digest can tell."""
    chunk = store / "observations" / "c" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))


def _nan_rows(store: Path) -> None:
    import zarr

    zarr.open_array(str(store / "rewards"), mode="r+")[3] = np.nan


def _width(name: str) -> Callable[[dict], np.ndarray]:
    return lambda a: np.zeros((len(a["rewards"]), 0), np.float32)


def _truncated_h5(tmp: Path, _: Path) -> tuple[list[str], str]:
    path = h5_with(tmp, "cut.hdf5")
    truncate(path)
    return imp(path, tmp / "out.zarr"), "cut.hdf5"


def _text_h5(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "notes.hdf5").write_text("observations,actions\n1,2\n")
    return imp(tmp / "notes.hdf5", tmp / "out.zarr"), "notes.hdf5"


def _dir_source(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "hopper_data").mkdir()
    (tmp / "hopper_data" / "keep.txt").write_text("x")
    return imp(tmp / "hopper_data", tmp / "out.zarr"), "hopper_data: is a directory"


def _out_exists_dir(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "precious.txt").write_text("do not delete")
    return imp(h5_with(tmp, "hopper-ok.hdf5"), tmp / "mine"), "mine: already exists; pass --force"


def _out_exists_file(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "taken.zarr").write_text("a file")
    return imp(h5_with(tmp, "hopper-ok.hdf5"), tmp / "taken.zarr", "--force"), "taken.zarr: is an existing file"


def _out_under_file(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "plain").write_text("a file")
    return imp(h5_with(tmp, "hopper-ok.hdf5"), tmp / "plain" / "o.zarr"), "plain"


def _export_exists(tmp: Path, _: Path) -> tuple[list[str], str]:
    store = good_store(tmp)
    (tmp / "x.hdf5").write_text("someone's file")
    return ["store", "export", str(store), "--out", str(tmp / "x.hdf5")], "x.hdf5: already exists"


def _build_card_exists(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "h.zarr.card.json").write_text("{}")
    return ["dataset", "build", "--out", str(tmp / "h.zarr")], "h.zarr.card.json: already exists"


def _d4rl_name_missing(tmp: Path, _: Path) -> tuple[list[str], str]:
    os.environ["D4RL_DATASET_DIR"] = str(tmp)  # restored by the runner
    return imp("hopper-medium-v2", tmp / "out.zarr"), "hopper-medium-v2"


def _store_is_file(tmp: Path, _: Path) -> tuple[list[str], str]:
    (tmp / "f.zarr").write_text("x")
    return ["store", "validate", str(tmp / "f.zarr")], "f.zarr: is a file"


def _store_missing(tmp: Path, _: Path) -> tuple[list[str], str]:
    return ["store", "info", str(tmp / "none.zarr")], "none.zarr: store does not exist"


def _source(make: Callable[[Path], str]) -> Callable[[Path], str]:
    return lambda tmp: params_text(dataset={"source": make(tmp), "env": "hopper"})


def _round7(tmp: Path, _: Path) -> tuple[list[str], str]:
    write_params(tmp, params_text())
    return ["round", "7", "--root", str(tmp)], "round 7 is not in the table"


def _serve(tmp: Path, _: Path) -> tuple[list[str], str]:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_params(tmp, params_text())
    return ["serve", "--root", str(tmp), "--api-url", f"http://127.0.0.1:{port}/api"], "start `cfdg server` first"


def _ckpt_text(tmp: Path) -> Path:
    (tmp / "agent.pt").write_text("agent weights go here\n")
    return tmp / "agent.pt"


def _ckpt_dir(tmp: Path) -> Path:
    (tmp / "agent.pt").mkdir()
    return tmp / "agent.pt"


def _ckpt_truncated(tmp: Path) -> Path:
    torch.save({"format": "cfdg-agent/1", "w": torch.zeros(1000)}, tmp / "agent.pt")
    truncate(tmp / "agent.pt")
    return tmp / "agent.pt"


def _ckpt_wrong_format(tmp: Path) -> Path:
    torch.save({"format": "something-else"}, tmp / "agent.pt")
    return tmp / "agent.pt"


def _other_width(_: Path, rnd: Path) -> None:
    ckpt = torch.load(rnd / "diffusion.pt", weights_only=True)
    ckpt["config"]["width"] = 64  # the weights stay width 32
    torch.save(ckpt, rnd / "diffusion.pt")


def _ckpt_plain_text(tmp: Path) -> Path:
    """Text whose first byte torch's pickle reader takes for an opcode ('c': GLOBAL)."""
    (tmp / "agent.pt").write_text("checkpoint goes here\n")
    return tmp / "agent.pt"


def _ckpt_cut_short(tmp: Path) -> Path:
    """A real checkpoint missing its last 10 bytes (the zip's end record): torch says only Errno 22."""
    path = pretrained_agent(tmp)
    path.write_bytes(path.read_bytes()[:-10])
    return path


def _diffusion(change: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def damage(_: Path, rnd: Path) -> None:
        ckpt = torch.load(rnd / "diffusion.pt", weights_only=True)
        change(ckpt)
        torch.save(ckpt, rnd / "diffusion.pt")

    return damage


def _metadata_array_env(tmp: Path, _: Path) -> tuple[list[str], str]:
    """The env named by a scalar array `metadata/env` rather than an attribute."""
    path = h5_with(tmp, "hop.hdf5")
    with h5py.File(path, "a") as f:
        f.create_group("metadata").create_dataset("env", data="pong")
    return imp(path, tmp / "out.zarr", "--env", "hopper"), "hop.hdf5: metadata env names env 'pong', not 'hopper'"


def _replace(content: bytes | None) -> Callable[[Path, Path], None]:
    def damage(_: Path, rnd: Path) -> None:
        (rnd / "diffusion.pt").unlink()
        if content is None:
            (rnd / "diffusion.pt").mkdir()
        else:
            (rnd / "diffusion.pt").write_bytes(content)

    return damage


CATALOGUE: dict[str, Case] = {
    # D4RL HDF5 files through `cfdg dataset import`
    "h5-missing-key": h5_case(rewards=None),
    "h5-nan-obs": h5_case(observations=lambda a: np.where(np.arange(60)[:, None] == 5, np.nan, a["observations"])),
    "h5-inf-reward": h5_case(rewards=lambda a: np.where(np.arange(60) == 7, np.inf, a["rewards"])),
    "h5-reward-1e300": h5_case(rewards=lambda a: np.where(np.arange(60) == 7, 1e300, a["rewards"].astype(np.float64))),
    "h5-terminal-2": h5_case(terminals=lambda a: np.full(60, 2, np.int8)),
    "h5-rank3-obs": h5_case(observations=np.zeros((60, 11, 1), np.float32)),
    "h5-string-actions": h5_case(actions=np.array([b"a"] * 60)),
    "h5-rows-differ": h5_case(actions=lambda a: a["actions"][:50]),
    "h5-one-row": h5_case(**{k: (lambda a, k=k: a[k][:1]) for k in hopper_arrays()}),
    "h5-truncated": Case(_truncated_h5),
    "h5-text-file": Case(_text_h5),
    "h5-directory": Case(_dir_source),
    "h5-missing-file": Case(lambda tmp, _: (imp(tmp / "gone.hdf5", tmp / "o.zarr"), "gone.hdf5")),
    "h5-obs-group": h5_case(observations=None, name="grp.hdf5", meta={"observations": 1}),
    "h5-other-env": h5_case(name="hop.hdf5", extra=("--env", "halfcheetah")),
    "h5-zero-width-obs": h5_case(observations=_width("observations"), next_observations=None),
    "h5-zero-width-actions": h5_case(actions=_width("actions")),
    "h5-metadata-env": h5_case(name="data.hdf5", meta={"env_id": "nonsense-v9", "cfdg_version": "0"}),
    "h5-no-env": h5_case(name="data.hdf5", also=("pass --env",)),
    "h5-metadata-names-other-env": h5_case(
        name="hop.hdf5", meta={"env_id": "pong"}, extra=("--env", "hopper"), also=("env_id names env 'pong'",)
    ),
    "h5-metadata-names-other-known-env": h5_case(
        name="hop.hdf5", meta={"env": "walker2d"}, extra=("--env", "hopper"), also=("names env 'walker2d'",)
    ),
    "h5-metadata-array-names-other-env": Case(_metadata_array_env),
    "h5-next-obs-width": h5_case(next_observations=np.zeros((60, 4), np.float32), meta={"cfdg_version": "0"}),
    "h5-all-timeouts": h5_case(timeouts=np.ones(60, bool)),
    "h5-name-not-found": Case(_d4rl_name_missing),
    "out-existing-dir": Case(_out_exists_dir),
    "out-existing-file": Case(_out_exists_file),
    "out-under-a-file": Case(_out_under_file),
    "export-out-exists": Case(_export_exists),
    "build-card-exists": Case(_build_card_exists),
    # Zarr stores through `cfdg store validate|info|export`
    "zarr-missing-chunk-validate": store_case("validate", _rm("rewards/c/1"), "array 'rewards' chunk c/1 is missing"),
    "zarr-missing-chunk-info": store_case("info", _rm("rewards/c/1"), "array 'rewards' chunk c/1 is missing"),
    "zarr-missing-chunk-export": store_case("export", _rm("rewards/c/1"), "array 'rewards' chunk c/1 is missing"),
    "zarr-missing-2d-chunk": store_case("validate", _rm("observations/c/3/0"), "array 'observations' chunk c/3/0"),
    "zarr-missing-bool-chunk": store_case("validate", _rm("terminals/c/0"), "array 'terminals' chunk c/0"),
    "zarr-missing-label-chunk": store_case("validate", _rm("labels/c/2"), "array 'labels' chunk c/2", "synthetic"),
    "zarr-legacy-missing-chunk": store_case("validate", _legacy_missing, "chunk c/1 is missing (store predates"),
    "zarr-truncated-chunk-validate": store_case(
        "validate", lambda s: truncate(s / "rewards" / "c" / "0"), "array 'rewards' cannot be read"
    ),
    "zarr-truncated-chunk-export": store_case(
        "export", lambda s: truncate(s / "rewards" / "c" / "0"), "array 'rewards' cannot be read"
    ),
    "zarr-changed-chunk-deep": store_case("deep", _flip_chunk, "chunk c/2/0 does not match its recorded sha256"),
    "zarr-float64-info": store_case("info", _dtype64, "array 'rewards' has dtype float64"),
    "zarr-float64-export": store_case("export", _dtype64, "array 'rewards' has dtype float64"),
    "zarr-garbage-array-json-info": store_case(
        "info", lambda s: (s / "actions" / "zarr.json").write_text("{garbage"), "array 'actions'"
    ),
    "zarr-garbage-array-json-validate": store_case(
        "validate", lambda s: (s / "actions" / "zarr.json").write_text("[1, 2"), "array 'actions'"
    ),
    "zarr-garbage-group-json": store_case(
        "validate", lambda s: (s / "zarr.json").write_text("nope"), "not a readable Zarr group"
    ),
    "zarr-counts-5-validate": store_case("validate", lambda s: set_attr(s, "counts", 5), "attribute 'counts' is 5"),
    "zarr-counts-5-export": store_case("export", lambda s: set_attr(s, "counts", 5), "attribute 'counts' is 5"),
    "zarr-counts-rows-wrong": store_case(
        "validate", lambda s: set_attr(s, "counts", {"rows": 7}), "attribute counts.rows is 7"
    ),
    "zarr-missing-array": store_case(
        "validate", lambda s: shutil.rmtree(s / "observations"), "missing array 'observations'"
    ),
    "zarr-schema-2": store_case("info", lambda s: set_attr(s, "schema_version", 2), "schema_version is 2"),
    "zarr-kind-bogus": store_case("info", lambda s: set_attr(s, "kind", "bogus"), "attribute 'kind' is 'bogus'"),
    "zarr-manifest-short": store_case(
        "validate",
        lambda s: set_attr(
            s, MANIFEST, {**json.loads((s / "zarr.json").read_text())["attributes"][MANIFEST], "rewards": {}}
        ),
        "array 'rewards' has shape [100] (4 chunks)",
    ),
    "zarr-nan-rows": store_case("validate", _nan_rows, "array 'rewards' has 1 non-finite"),
    "zarr-store-is-file": Case(_store_is_file),
    "zarr-store-missing": Case(_store_missing),
    # params.yaml through `cfdg check` / `cfdg run`
    "params-yaml-syntax": params_case("seed: 0\nrounds: {'1': {prev: 0}\n  bad: [\n", "params.yaml:"),
    "params-range": params_case(params_text(quality={"max_rows": 1}), "params.yaml:quality.max_rows"),
    "params-range-run": params_case(params_text(quality={"max_rows": 1}), "params.yaml:quality.max_rows", "run"),
    "params-round-01": params_case(params_text(rounds={"01": {"prev": 0}}), "rounds: key '01'"),
    "params-round-0": params_case(params_text(rounds={"0": {"prev": -1}}), "rounds: key '0'"),
    "params-prev-false": params_case(params_text(rounds={"1": {"prev": False}}), "rounds.1.prev"),
    "params-prev-float": params_case(params_text(rounds={"1": {"prev": 0.0}}), "rounds.1.prev"),
    "params-prev-false-run": params_case(params_text(rounds={"1": {"prev": False}}), "rounds.1.prev", "run"),
    "params-unknown-top": params_case(params_text(difusion={}), "unknown top-level key"),
    "params-seed": params_case(params_text(seed=-1), "params.yaml:seed"),
    "params-width-type": params_case(params_text(diffusion={"width": "wide"}), "params.yaml:diffusion.width"),
    "params-source-missing": params_case(_source(lambda t: "nowhere/hopper.hdf5"), "nowhere/hopper.hdf5"),
    "params-source-dir": params_case(_source(lambda t: (t / "d").mkdir() or "d"), "d: is a directory"),
    "params-source-text": params_case(
        _source(lambda t: (t / "x.hdf5").write_text("x") and "x.hdf5"), "x.hdf5: not a readable HDF5 file"
    ),
    "params-source-keys": params_case(
        _source(lambda t: h5_with(t, "k.hdf5", actions=None).name), "k.hdf5: missing key 'actions'"
    ),
    "params-source-name": params_case(_source(lambda t: "hopper-medium-v7"), "hopper-medium-v7"),
    "params-source-nan-reward": params_case(
        _source(
            lambda t: h5_with(t, "r.hdf5", rewards=lambda a: np.where(np.arange(60) == 9, np.nan, a["rewards"])).name
        ),
        "r.hdf5: key 'rewards' has 1 NaN/inf value(s), first at row 9",
    ),
    "params-source-terminal-2": params_case(
        _source(lambda t: h5_with(t, "t.hdf5", terminals=np.full(60, 2, np.int8)).name),
        "t.hdf5: key 'terminals' must hold only 0/1",
    ),
    "params-source-zero-width-obs": params_case(
        _source(lambda t: h5_with(t, "w.hdf5", observations=_width("observations")).name),
        "w.hdf5: key 'observations' has width 0",
    ),
    "params-source-no-env": params_case(
        _source(lambda t: h5_with(t, "data.hdf5").name), "data.hdf5: cannot tell the env from the name"
    ),
    "params-source-other-layout": params_case(
        _source(lambda t: h5_with(t, "walker2d-x.hdf5").name), "walker2d-x.hdf5: rows are 11 (obs) / 3 (action) wide"
    ),
    "params-source-nan-reward-run": params_case(
        _source(
            lambda t: h5_with(t, "r.hdf5", rewards=lambda a: np.where(np.arange(60) == 9, np.inf, a["rewards"])).name
        ),
        "r.hdf5: key 'rewards' has 1 NaN/inf",
        "run",
    ),
    "params-missing": Case(lambda tmp, _: (["check", "--params", str(tmp / "p.yaml")], "p.yaml: parameters file")),
    "round-not-in-table": Case(_round7),
    "serve-without-server": Case(_serve),
    # checkpoints
    "agent-ckpt-pickle": agent_ckpt_case(lambda t: pickle_payload(t / "agent.pt"), "agent.pt: not a readable agent"),
    "agent-ckpt-text": agent_ckpt_case(_ckpt_text, "agent.pt: not a readable agent checkpoint"),
    "agent-ckpt-dir": agent_ckpt_case(_ckpt_dir, "agent.pt: is a directory"),
    "agent-ckpt-truncated": agent_ckpt_case(_ckpt_truncated, "agent.pt: not a readable agent checkpoint"),
    "agent-ckpt-other-format": agent_ckpt_case(_ckpt_wrong_format, "agent.pt: not a cfdg agent checkpoint"),
    "agent-ckpt-is-diffusion": agent_ckpt_case(None, "diffusion.pt: not a cfdg agent checkpoint"),
    "agent-ckpt-plain-text": agent_ckpt_case(
        _ckpt_plain_text,
        "agent.pt: not a readable agent checkpoint (not a torch checkpoint: neither a zip archive nor a pickle",
    ),
    "agent-ckpt-cut-short": agent_ckpt_case(_ckpt_cut_short, "agent.pt: not a readable agent checkpoint (truncated"),
    "agent-ckpt-empty": agent_ckpt_case(
        lambda t: (t / "agent.pt").write_bytes(b"") or t / "agent.pt",
        "agent.pt: not a readable agent checkpoint (the file is empty)",
    ),
    "agent-ckpt-algo-disagrees": agent_ckpt_case(
        _agent_with(_set("algo", "pex")),
        "agent.pt: inconsistent agent checkpoint: algo is 'pex' but agent_config.algo is 'iql'",
    ),
    "agent-ckpt-algo-disagrees-asked": agent_ckpt_case(
        _agent_with(_set("algo", "pex")), "algo is 'pex' but agent_config.algo is 'iql'", "agent.algo=pex"
    ),
    "agent-ckpt-other-algo-asked": agent_ckpt_case(
        pretrained_agent, "agent.pt: checkpoint is for algorithm 'iql', not 'pex'", "agent.algo=pex"
    ),
    "agent-ckpt-normaliser-width": agent_ckpt_case(
        _agent_with(_set("agent.obs_mean", torch.zeros(12))),
        "agent.pt: inconsistent agent checkpoint: agent.obs_mean is [12], obs_dim says 11",
    ),
    "agent-ckpt-env-dims": agent_ckpt_case(
        _agent_with(_set("env", "halfcheetah")),
        "agent.pt: inconsistent agent checkpoint: env 'halfcheetah'",
        once="agent.pt",
    ),
    "agent-ckpt-max-action-nan": agent_ckpt_case(
        _agent_with(_set("max_action", float("nan"))), "agent.pt: inconsistent agent checkpoint: max_action is nan"
    ),
    "agent-ckpt-weights-other-width": agent_ckpt_case(
        _agent_with(_set("agent_config.hidden_dims", [32, 32])), "agent.pt: checkpoint '", once="agent.pt"
    ),
    "diffusion-pickle": stage_case(
        "materialise", lambda t, r: pickle_payload(r / "diffusion.pt") and None, "diffusion.pt: not a readable"
    ),
    "diffusion-text": stage_case("materialise", _replace(b"weights\n"), "diffusion.pt: not a readable diffusion"),
    "diffusion-dir": stage_case("materialise", _replace(None), "diffusion.pt: is a directory"),
    "diffusion-truncated": stage_case(
        "materialise", lambda t, r: truncate(r / "diffusion.pt"), "diffusion.pt: not a readable diffusion"
    ),
    "diffusion-other-width": stage_case(
        "materialise", _other_width, "does not fit a width-64 depth-1 denoiser", once="diffusion.pt"
    ),
    "diffusion-bad-config-value": stage_case(
        "materialise",
        _diffusion(_set("config.width", "wide")),
        "diffusion.pt: config.width",
        once="diffusion.pt",
    ),
    "diffusion-variant-disagrees": stage_case(
        "materialise",
        _diffusion(_set("variant", "none")),
        "diffusion.pt: inconsistent diffusion checkpoint: variant 'none' but config.variant",
    ),
    "diffusion-unknown-variant": stage_case(
        "materialise",
        _diffusion(_set("config.variant", "gan")),
        "diffusion.pt: variant 'gan' is not one this cfdg knows",
    ),
    "diffusion-normaliser-std-width": stage_case(
        "materialise",
        _diffusion(lambda c: c["normaliser"].__setitem__("std", c["normaliser"]["std"][:-1])),
        "diffusion.pt: inconsistent diffusion checkpoint: normaliser.std is [26]",
    ),
    "fit-missing-online-chunk": stage_case(
        "fit", lambda t, r: (r / "online.zarr" / "rewards" / "c" / "0").unlink(), "online.zarr: array 'rewards' chunk"
    ),
    "materialise-float64-online": stage_case(
        "materialise", lambda t, r: _dtype64(r / "online.zarr"), "online.zarr: array 'rewards' has dtype float64"
    ),
}


def snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            key = str(p)
            out[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_case(case: Case, argv: list[str]) -> int:
    if case.stage is None:
        from pipeline.cli import main

        return main(argv)
    import importlib

    return importlib.import_module(f"stages.{case.stage}").main(argv)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_input_is_one_line_and_changes_nothing(name, tmp_path, diffusion_ckpt, capsys, monkeypatch):
    case = CATALOGUE[name]
    # set, then delete: monkeypatch then restores the variable's absence after the test, so nothing a
    # case writes into os.environ leaks into later tests' subprocesses
    monkeypatch.setenv("PREFECT_API_URL", "unset")
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "no-d4rl"))
    monkeypatch.setenv("CFDG_STAGE_ID", "")
    monkeypatch.chdir(tmp_path)
    argv, culprit = case.setup(tmp_path, diffusion_ckpt)
    before = snapshot(tmp_path, diffusion_ckpt.parent)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = run_case(case, argv)
    assert "PREFECT_API_URL" not in os.environ, "a refused command left PREFECT_API_URL behind for later processes"
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, f"exit {rc}; stderr: {err}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert culprit in lines[0], f"{culprit!r} not named in: {lines[0]}"
    for text in case.also:
        assert text in lines[0], f"{text!r} not said in: {lines[0]}"
    if case.once is not None:
        assert lines[0].count(case.once) == 1, f"{case.once!r} not named exactly once in: {lines[0]}"
    assert "Traceback" not in err and "Traceback" not in out
    assert not [w for w in caught if not issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    assert snapshot(tmp_path, diffusion_ckpt.parent) == before, "a file was written, changed or deleted"
    assert not (tmp_path / "PWNED").exists(), "a pickle payload ran"


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 60


@pytest.mark.parametrize("name", ["h5-reward-1e300", "zarr-counts-5-export", "params-yaml-syntax", "diffusion-pickle"])
def test_real_entry_points(name, tmp_path, diffusion_ckpt):
    """The same cases through `python -m pipeline` / `python -m stages.X`: stderr is exactly one line."""
    case = CATALOGUE[name]
    argv, culprit = case.setup(tmp_path, diffusion_ckpt)
    module = ["-m", "pipeline"] if case.stage is None else ["-m", f"stages.{case.stage}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CFDG_FAIL_STAGE", None)
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, *module, *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and culprit in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before


def _junk_metadata(path: Path, junk: str) -> None:
    with h5py.File(path, "a") as f:
        if junk == "metadata-is-array":
            f.create_dataset("metadata", data=np.arange(5))
        else:
            f.create_group("metadata").attrs["env_id"] = np.arange(3)


@pytest.mark.parametrize("junk", ["metadata-is-array", "env-is-numbers"])
def test_unreadable_metadata_is_one_warning_and_recorded(junk, tmp_path, capsys, monkeypatch):
    """Accepted (the env comes from --env or the name), but never in silence: `check` and the import
    say it in one warning line naming the file, and the store records what was ignored."""
    from cfdg.store import read_attrs
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    src = h5_with(tmp_path, "hopper-junk.hdf5")
    _junk_metadata(src, junk)
    params = write_params(tmp_path, params_text(dataset={"source": src.name, "env": "hopper"}))
    for argv in (["check", "--params", str(params)], imp(src, tmp_path / "out.zarr", "--env", "hopper")):
        assert main(argv) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cfdg: warning:") and "hopper-junk.hdf5" in err[0], err
        assert "metadata" in err[0] and "ignored" in err[0], err
    recorded = read_attrs(tmp_path / "out.zarr")["params"]["metadata_ignored"]
    assert "metadata" in recorded, recorded


def test_check_reads_a_good_source_and_says_what_it_read(tmp_path, capsys):
    """The value pass refuses none of a good file, and `check` says what it looked at."""
    from pipeline.cli import main

    src = h5_with(tmp_path, "hopper-ok.hdf5", terminals=lambda a: np.eye(1, 60, 40, dtype=bool)[0])
    params = write_params(tmp_path, params_text(dataset={"source": src.name, "env": "hopper"}))
    assert main(["check", "--params", str(params)]) == 0
    out, err = capsys.readouterr()
    assert "(D4RL file read: keys, shapes, values, env)" in out and not err, (out, err)
