"""Three settings at 0.8 that meant three things got names that say which: the old names still
read, with one warning line each, wherever a params mapping comes from (params.yaml, a preset, a
study file), and committed study results recorded under the old names are read without one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_project import ROOT, sh

from cfdg.errors import ConfigError
from pipeline.study.results import read_result
from pipeline.study.spec import Cell, load_study

# section, old name, new name, a value other than the default
RENAMES = [
    ("diffusion", "batch_online_share", "fit_online_fraction", 0.6),
    ("sampling", "online_label_share", "generated_online_fraction", 0.7),
    ("rollout", "synthetic_online_share", "synthetic_online_fraction", 0.5),
]


def _params(tmp_path: Path, name: str, key_of: dict[str, str]) -> Path:
    """The project's params.yaml with the three settings set to non-defaults under the given names."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, old, new, value in RENAMES:
        data[section].pop(old, None)
        data[section].pop(new, None)
        data[section][key_of[section] if section in key_of else new] = value
    path = tmp_path / name / "params.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("cfdg: warning:")]


def test_old_names_give_one_warning_each_and_the_same_config(tmp_path):
    old = _params(tmp_path, "old", {s: o for s, o, _, _ in RENAMES})
    new = _params(tmp_path, "new", {})
    check = (sys.executable, "-m", "pipeline", "check", "--resolved", "--params")
    got_old, got_new = sh(ROOT, *check, str(old)), sh(ROOT, *check, str(new))
    assert got_old.stdout == got_new.stdout  # every effective setting, under the new names
    resolved = yaml.safe_load(got_new.stdout)
    assert all(resolved[f"{s}.{n}"] == v for s, _, n, v in RENAMES), resolved
    assert _warnings(got_new.stderr) == []
    assert sorted(_warnings(got_old.stderr)) == sorted(
        f"cfdg: warning: params.yaml: {s}.{o} is now {s}.{n}" for s, o, n, _ in RENAMES
    ), got_old.stderr


def test_both_names_given_is_one_line_naming_them(tmp_path):
    path = _params(tmp_path, "both", {})
    data = yaml.safe_load(path.read_text())
    data["sampling"]["online_label_share"] = 0.7
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = sh(ROOT, sys.executable, "-m", "pipeline", "check", "--params", str(path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cfdg: error: params.yaml: sampling.online_label_share and sampling.generated_online_fraction are both "
        "given; online_label_share is the old name of generated_online_fraction: keep only "
        "generated_online_fraction"
    ]


def test_a_study_file_and_its_preset_with_old_names_give_the_same_cells_and_one_warning_each(tmp_path):
    """Four cells read the ablation and the preset; each old name still warns once, and the cells'
    params.yaml hold only the new names (their digests equal the new-name study's)."""
    (tmp_path / "configs").mkdir()
    study = """name: renamed
preset: configs/p.yaml
axes: {{algo: [iql], variant: [cfdg], seed: [0, 1]}}
ablations:
  all-online: {{sampling: {{{key}: 1.0}}}}
ablation_axes: {{seed: [0, 1]}}
"""
    for tag, (batch, label) in {"old": ("batch_online_share", "online_label_share"), "new": (None, None)}.items():
        batch = batch or "fit_online_fraction"
        (tmp_path / "configs" / f"p-{tag}.yaml").write_text(f"diffusion: {{{batch}: 0.6}}\n")
        text = study.format(key=label or "generated_online_fraction").replace("p.yaml", f"p-{tag}.yaml")
        (tmp_path / f"{tag}.yaml").write_text(text)
    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    cells = (sys.executable, "-m", "pipeline", "study", "cells", "--no-files", "--root", str(tmp_path))
    proc = sh(ROOT, *cells, str(tmp_path / "old.yaml"))
    assert len(proc.stdout.split()) == 4
    assert _warnings(proc.stderr) == [
        "cfdg: warning: configs/p-old.yaml: diffusion.batch_online_share is now diffusion.fit_online_fraction",
        f"cfdg: warning: {tmp_path / 'old.yaml'}.ablations.all-online: sampling.online_label_share is now "
        "sampling.generated_online_fraction",
    ], proc.stderr
    old, new = (load_study(tmp_path / f"{tag}.yaml", tmp_path, check_files=False) for tag in ("old", "new"))
    assert [c.digest for c in old.cells] == [c.digest for c in new.cells]
    ablation = [c for c in new.cells if c.ablation][-1]
    assert ablation.params["sampling"]["generated_online_fraction"] == 1.0
    assert ablation.params["diffusion"]["fit_online_fraction"] == 0.6


def test_a_committed_cell_recorded_under_the_old_names_is_read_without_a_warning(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["sampling"]["generated_online_fraction"]
    params["sampling"]["online_label_share"] = 1.0  # as a cell run before the rename recorded it
    cell = Cell("c-s0", "", "d", "iql", "cfdg", 0, None, params)
    record = {
        "cell": "c-s0",
        "variant": "cfdg",
        "seed": 0,
        "commit": "0" * 40,
        "params": params,
        "curve": [[0, 1.0]],
        "pretrain_score": 1.0,
        "final_score": 1.0,
        "rounds": {},
    }
    path = tmp_path / "c-s0.json"
    path.write_text(json.dumps(record))
    assert read_result(path, cell, {"sampling.generated_online_fraction": 1.0}) is not None
    assert capsys.readouterr().err == ""
    # the renamed value is still compared with the pin, and a mismatch named
    with pytest.raises(
        ConfigError, match=r"params sampling.generated_online_fraction = 1.0, but the study file sets 0.8"
    ):
        read_result(path, cell, {"sampling.generated_online_fraction": 0.8})
