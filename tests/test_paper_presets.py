"""The paper presets run what the paper ran, whatever params.yaml held before.

Each preset is resolved both ways a user meets it (`cfdg preset` on a params.yaml, and a study
cell with `preset:`), starting from a params.yaml whose sections were changed away from every
paper value, and each row of the "Paper settings" table (docs/paper-settings.md) that names a key
is checked against the resolved settings (and the embedded default against its CPU-default column).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import sections
from pipeline.preset import apply_preset
from pipeline.study_spec import load_study

ROOT = Path(__file__).resolve().parents[1]
PAPER_SETTINGS = ROOT / "docs" / "paper-settings.md"
PRESETS = {"iql": "IQL / PEX preset", "pex": "IQL / PEX preset", "apl": "APL preset"}

# A params.yaml moved away from the paper on every setting the table lists.
PERTURBED = {
    "agent": {"iql_tau": 0.8, "iql_beta": 3.0, "normalize_obs": True, "inv_temperature": 2.0, "bc_alpha": 1.0},
    "pretrain": {"steps": 123},
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
        "synthetic_online_share": 0.6,
    },
    "diffusion": {
        "conditioning": "film",
        "batch_online_share": 0.8,
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
    },
    "sampling": {
        "steps": 8,
        "stochastic": False,
        "guidance_w": 3.0,
        "online_label_share": 0.5,
        "buffer": "replace",
        "capacity": 10,
        "n_rows": 10,
    },
}


def table_rows() -> list[tuple[str, dict[str, str]]]:
    """(key, {column: cell}) for each row of the paper-settings table that names a key."""
    lines = [ln for ln in PAPER_SETTINGS.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip().strip("|"))]
        if len(cells) != len(header):
            break
        row = dict(zip(header, cells, strict=True))
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
        want = value(cell)
        got = by_preset[key]
        assert got == want, f"cfdg preset configs/paper/{algo}.yaml: {key} = {got!r}, table {want!r}"
        if key != "rounds":  # a study sets rounds through its own `rounds:`; the preset's is the default
            assert by_study[key] == want, f"study cell with {algo} preset: {key} = {by_study[key]!r}, table {want!r}"
        checked += 1
    assert checked >= 25
    assert by_preset["agent.algo"] == algo


def test_cpu_default_column_is_the_embedded_default():
    resolved = sections.resolved(sections.load_all(ROOT / "params.yaml"))
    for key, row in table_rows():
        cell = row["CPU default"]
        if cell.startswith("`"):
            assert resolved[key] == value(cell), f"params.yaml {key} = {resolved[key]!r}, table says {cell}"


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
    assert flat["agent.exp_adv_max"] == 100.0  # a default nobody wrote down is printed too
    assert flat["sampling.s_churn"] == 80.0
    assert set(flat) >= {f"{s}.{k}" for s, keys in PERTURBED.items() for k in keys}
