"""The paper presets run what the paper ran, whatever params.yaml held before.

Each preset is resolved both ways a user meets it (`cfdg preset` on a params.yaml, and a study
cell with `preset:`), starting from a params.yaml whose sections were changed away from every
paper value, and each row of the "Paper settings" table (docs/paper-settings.md) that names a key
is checked against the resolved settings (and the embedded default against its CPU-default column).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cfdg.agents.registry import AGENTS, algos_reading
from cfdg.envs import make_env
from cfdg.store import StoreMeta, Transitions, write_store
from pipeline import sections
from pipeline.preset import apply_preset
from pipeline.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
PAPER_SETTINGS = ROOT / "docs" / "paper-settings.md"
PRESETS = {"iql": "IQL / PEX preset", "pex": "IQL / PEX preset", "apl": "APL preset"}

# A params.yaml moved away from the paper on every setting the table lists.
PERTURBED = {
    "agent": {
        "hidden_dims": [64, 64],
        "lr": 0.001,
        "batch_size": 64,
        "discount": 0.9,
        "target_rate": 0.01,
        "iql_tau": 0.8,
        "iql_beta": 3.0,
        "actor_cosine": False,
        "log_std_min": -10.0,
        "log_std_max": 1.0,
        "normalize_obs": True,
        "inv_temperature": 2.0,
        "pex_eval_eps": 0.2,
        "apl_engine": "td3bc",
        "apl_critics": 3,
        "cql_alpha": 1.0,
        "cql_n_actions": 3,
        "cql_temp": 2.0,
        "cql_importance_sample": False,
        "cql_policy_lr": 0.001,
        "bc_alpha": 1.0,
    },
    "pretrain": {"steps": 123, "eval_every": 7, "eval_episodes": 3},
    "rollout": {
        "steps": 700,
        "chunk_rows": 700,
        "utd": 3,
        "train_every": 7,
        "warmup_steps": 11,
        "real_online_share": 0.3,
        "p_online": 0.9,
        "online_threshold": 5,
        "online_buffer_size": 99,
        "synthetic_ratio": 0.5,
        "synthetic_online_fraction": 0.6,
        "eval_episodes": 3,
    },
    "diffusion": {
        "conditioning": "film",
        "fit_online_fraction": 0.8,
        "width": 64,
        "depth": 2,
        "train_steps": 50,
        "lr": 0.01,
        "lr_schedule": "constant",
        "ema_decay": 0.9,
        "p_uncond": 0.3,
        "warm_start": True,
        "warm_start_steps": 10,
        "batch_size": 32,
        "layer_norm": True,
    },
    "sampling": {
        "solver": "dpmpp2m",
        "steps": 8,
        "stochastic": False,
        "guidance_w": 3.0,
        "generated_online_fraction": 0.5,
        "buffer": "replace",
        "capacity": 10,
        "n_rows": 10,
    },
    "quality": {"max_rows": 123},
    "report": {"tsne_max_per_group": 55},
}
# A source: "chosen", a paper section / algorithm / equation, or a file of the code the paper names.
SOURCE = re.compile(r"\bchosen\b|\b(?:[234]\.\d|A\.\d)\b|Algorithm 1|eq\. \d|`[\w/.-]+\.(?:py|gin|yaml|md)`")


def all_rows() -> list[dict[str, str]]:
    """{column: cell} for each row of the paper-settings table."""
    lines = [ln for ln in PAPER_SETTINGS.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip().strip("|"))]
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def table_rows() -> list[tuple[str, dict[str, str]]]:
    """(key, {column: cell}) for each row of the paper-settings table that names a key."""
    rows = []
    for row in all_rows():
        key = re.fullmatch(r"`([a-z_.]+)`", row["Key"])
        if key:
            rows.append((key.group(1), row))
    return rows


def value(cell: str) -> Any:
    return yaml.safe_load(cell.strip("`"))


def perturbed_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, keys in PERTURBED.items():
        params[section].update(keys)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sections.load_all(tmp_path / "params.yaml")  # the perturbed file is itself valid
    return tmp_path


def resolved_by_preset(project: Path, algo: str) -> dict[str, Any]:
    target = project / f"params-{algo}.yaml"
    shutil.copy(project / "params.yaml", target)
    apply_preset(project / "configs" / "paper" / f"{algo}.yaml", target)
    return sections.resolved(sections.load_all(target))


def resolved_by_study(project: Path, algo: str) -> dict[str, Any]:
    study = project / f"study-{algo}.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": f"paper-{algo}",
                "preset": f"configs/paper/{algo}.yaml",
                "axes": {"dataset": {"hopper": {"dataset": {"env": "hopper"}}}, "algo": [algo], "seed": [0]},
            }
        )
    )
    cell = load_study(study, project, check_files=False).cells[0]
    out = project / f"cell-{algo}.yaml"
    out.write_text(cell.params_yaml)
    return sections.resolved(sections.load_all(out))


def test_paper_settings_table_names_the_settings():
    keys = {k for k, _ in table_rows()}
    for must in ("agent.iql_beta", "rollout.train_every", "diffusion.conditioning", "sampling.buffer", "rounds"):
        assert must in keys


def test_every_row_names_its_source():
    """A value the presets call the paper's names where it comes from; the rest say "chosen"."""
    rows = all_rows()
    assert len(rows) >= 50
    unsourced = [row["Setting"] for row in rows if not SOURCE.search(row["Source"])]
    assert not unsourced, f"docs/paper-settings.md rows without a source or 'chosen': {unsourced}"


def test_every_preset_key_has_a_row():
    """A setting a preset writes is in the table, so its source is written down."""
    keys = {k for k, _ in table_rows()}
    for algo in PRESETS:
        missing = sorted(preset_keys(algo) - keys - {"agent.algo", "diffusion.variant"})
        assert not missing, f"configs/paper/{algo}.yaml sets {missing}, which docs/paper-settings.md does not list"


@pytest.mark.parametrize("algo", sorted(PRESETS))
def test_paper_preset_does_not_inherit_params_yaml(tmp_path, algo):
    project = perturbed_project(tmp_path)
    by_preset = resolved_by_preset(project, algo)
    by_study = resolved_by_study(project, algo)
    column = PRESETS[algo]
    checked = 0
    for key, row in table_rows():
        cell = row[column]
        if cell in ("–", "") or not cell.startswith("`"):
            continue
        if key.startswith("agent.") and key not in by_preset:  # the IQL / PEX column: PEX's keys under IQL
            assert algo not in algos_reading(key.removeprefix("agent.")), key
            continue
        want = value(cell)
        got = by_preset[key]
        assert got == want, f"cfdg preset configs/paper/{algo}.yaml: {key} = {got!r}, table {want!r}"
        if key != "rounds":  # a study sets rounds through its own `rounds:`; the preset's is the default
            assert by_study[key] == want, f"study cell with {algo} preset: {key} = {by_study[key]!r}, table {want!r}"
        checked += 1
    assert checked >= 25
    assert by_preset["agent.algo"] == algo


def test_cpu_default_column_is_the_embedded_default():
    """An agent key the embedded run's agent does not read is resolved as the first agent reading it
    would get it from params.yaml (IQL's expectile: IQL on the embedded run)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    resolved = sections.resolved(sections.validate(raw))
    for key, row in table_rows():
        cell = row["CPU default"]
        if not cell.startswith("`"):
            continue
        got = resolved.get(key)
        if key not in resolved:
            algo = algos_reading(key.removeprefix("agent."))[0]
            other = {**raw, "agent": {**raw["agent"], "algo": algo}}
            got = sections.resolved(sections.validate(other))[key]
        assert got == value(cell), f"params.yaml {key} = {got!r}, table says {cell}"


def test_check_resolved_prints_every_setting(tmp_path):
    project = perturbed_project(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "check", "--params", str(project / "params.yaml"), "--resolved"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = yaml.safe_load(out)
    assert flat["diffusion.conditioning"] == "film" and flat["rollout.train_every"] == 7
    assert flat["agent.reward_scale"] == 1.0  # a default nobody wrote down is printed too
    assert flat["sampling.s_churn"] == 80.0
    read = {f"agent.{k}" for k in PERTURBED["agent"] if "apl" in algos_reading(k)}  # params.yaml runs APL
    assert set(flat) >= {f"{s}.{k}" for s, keys in PERTURBED.items() if s != "agent" for k in keys} | read
    assert "agent.iql_tau" not in flat  # IQL's key: accepted, but APL does not read it


# --- every setting a preset writes is read on its path ----------------------------------------------

# Sizes shrunk so that a run of two rounds takes seconds; every other key keeps the preset's value, so
# the run takes the preset's code paths (engine, paradigm, buffer, warm start, guidance, ...).
SHRINK: dict[str, dict[str, Any]] = {
    "agent": {"hidden_dims": [16, 16], "batch_size": 32},
    "pretrain": {"steps": 20, "eval_every": 10, "eval_episodes": 1},
    "rollout": {"steps": 40, "chunk_rows": 40, "eval_episodes": 1},
    "diffusion": {"width": 32, "depth": 2, "train_steps": 20, "batch_size": 32},
    "sampling": {"steps": 4, "n_rows": 60, "capacity": 80},
    "quality": {"max_rows": 50, "fidelity_rows": 20},
    "report": {"tsne_max_per_group": 20},
}
SHRINK_ROLLOUT = {  # the cycle and thresholds scaled with the round, so that updates, online batches
    "iql": {"warmup_steps": 10},  # and the FIFO's wrap all happen within 40 env steps
    "pex": {"warmup_steps": 10},
    "apl": {"train_every": 10, "utd": 2, "online_threshold": 15, "online_buffer_size": 30},
}
# Config fields read while a config is validated, copied, printed or serialised are not "read by the code".
_NOT_A_USE = ("dataclasses.py", "copy.py", "cfdg/config.py", "<string>")


def preset_keys(algo: str) -> set[str]:
    """`section.key` for every setting the preset file writes (rounds is the DVC rounds table, not a config)."""
    raw = yaml.safe_load((ROOT / "configs" / "paper" / f"{algo}.yaml").read_text())
    return {f"{name}.{key}" for name, body in raw.items() if isinstance(body, dict) for key in body}


def record_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Instrument every section's dataclass: a read of a field by the running code adds `section.field`."""
    reads: set[str] = set()

    def recorder(section: str, fields: frozenset[str]):
        def __getattribute__(self, name: str) -> Any:
            if name in fields:
                caller = sys._getframe(1)
                code = caller.f_code
                if code.co_name != "__post_init__" and not code.co_filename.endswith(_NOT_A_USE):
                    reads.add(f"{section}.{name}")
            return object.__getattribute__(self, name)

        return __getattribute__

    classes = [(section, cls) for section, cls in sections.CONFIG_CLASSES.items() if section != "agent"]
    classes += [("agent", cls.config_class) for cls in AGENTS.values()]  # each agent's own config
    for section, cls in classes:
        names = frozenset(f.name for f in dataclasses.fields(cls))
        monkeypatch.setattr(cls, "__getattribute__", recorder(section, names))
    return reads


def random_hopper_store(path: Path, n: int = 400) -> Path:
    env, rng = make_env("hopper"), np.random.default_rng(0)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations")}
    cols.update(terminals=[], timeouts=[])
    obs, _ = env.reset(seed=0)
    for _ in range(n):
        a = rng.uniform(-1, 1, 3).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        for k, v in zip(cols, (obs, a, r, nxt, term, trunc and not term), strict=True):
            cols[k].append(v)
        obs = env.reset(seed=int(rng.integers(1 << 30)))[0] if term or trunc else nxt
    data = Transitions.from_arrays({k: np.asarray(v) for k, v in cols.items()})
    return write_store(path, data, StoreMeta(kind="offline", env_id="Hopper-v5", source="test-random"), chunk_rows=200)


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(PRESETS))
def test_every_preset_setting_is_read_on_its_path(tmp_path, monkeypatch, capsys, algo):
    """A setting the code never reads passes every value check and does nothing. Run the preset (sizes
    shrunk, everything else as written) through every stage of two rounds in this process, with every
    config field read recorded: each key the preset writes must be read by the code on the way."""
    from stages import fit, materialise, params, pretrain, report, rollout

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_preset(tmp_path / "configs" / "paper" / f"{algo}.yaml", tmp_path / "params.yaml")
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for section, keys in SHRINK.items():
        raw[section].update(keys)
    raw["rollout"].update(SHRINK_ROLLOUT[algo])
    raw["rounds"] = params.rounds_table(2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    random_hopper_store(Path("artifacts/dataset/offline.zarr"))
    monkeypatch.setenv("CFDG_PROGRESS", "0")

    reads = record_reads(monkeypatch)
    steps = [(pretrain.main, [])]
    for k in ("1", "2"):
        steps += [(rollout.main, ["--round", k]), (fit.main, ["--round", k]), (materialise.main, ["--round", k])]
    steps.append((report.main, []))
    for main, args in steps:
        rc = main(["--params", "params.yaml", *args])
        assert rc == 0, f"{main.__module__} {args}: {capsys.readouterr().err}"
    assert reads, "the recorder saw nothing: is the instrumentation still in place?"

    dead = sorted(preset_keys(algo) - reads)
    assert not dead, f"configs/paper/{algo}.yaml sets {dead}, which no code on its path reads"
