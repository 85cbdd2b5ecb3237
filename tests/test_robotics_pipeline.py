"""`cfdg run` end to end on AntMaze (a D4RL HDF5 file, Cal-QL) and Adroit (a local Minari dataset, IQL).

Real gymnasium-robotics envs, real DVC and Prefect, the tiny preset plus the domain presets, one round.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from tests.pipeline_project import make_project, set_params, sh
from tests.test_robotics import collect_minari, record, write_d4rl

pytestmark = pytest.mark.slow
TINY_AGENT = {"hidden_dims": [32, 32], "batch_size": 64}


def run_and_summary(repo) -> dict:
    sh(repo, sys.executable, "-m", "pipeline", "run", "--retries", "0")
    return json.loads((repo / "artifacts" / "report" / "summary.json").read_text())


def preset(repo, *names: str) -> None:
    for name in names:
        sh(repo, sys.executable, "-m", "pipeline", "preset", f"configs/{name}.yaml", "--rounds", "1")


def test_cfdg_run_antmaze_d4rl_file_with_calql(tmp_path):
    hdf5 = write_d4rl(tmp_path / "antmaze-umaze-v2.hdf5", record("antmaze-umaze", 1500, seed=0))
    repo = make_project(tmp_path / "p")
    preset(repo, "antmaze", "calql-antmaze")
    set_params(repo, dataset={"source": str(hdf5)}, agent={**TINY_AGENT, "cql_n_actions": 4})
    summary = run_and_summary(repo)
    text = json.dumps(summary)
    assert "calql" in text and "antmaze-umaze" in text
    rounds = json.loads((repo / "artifacts" / "rounds" / "1" / "rollout" / "metrics.json").read_text())
    about = json.loads((repo / "artifacts" / "rounds" / "1" / "rollout.provenance.json").read_text())["about"]
    assert about == {"algo": "calql", "env": "antmaze-umaze"}
    assert rounds["final_normalized_score"] in (0.0, 100.0)  # success rate × 100 over one episode
    assert (repo / "artifacts" / "rounds" / "1" / "synthetic.zarr").is_dir()


@pytest.mark.skipif(importlib.util.find_spec("minari") is None, reason="needs cfdg[minari]")
def test_cfdg_run_adroit_minari_dataset_with_iql(tmp_path):
    import gymnasium as gym

    from cfdg import envs

    envs.make_env("door")  # registers gymnasium-robotics
    root = tmp_path / "minari"
    import os

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        collect_minari("D4RL/door/human-v2", gym.make("AdroitHandDoor-v1", max_episode_steps=200), 1200, seed=0)
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    repo = make_project(tmp_path / "p")
    preset(repo, "adroit")
    set_params(repo, dataset={"source": "D4RL/door/human-v2"}, agent=TINY_AGENT)
    sh(repo, sys.executable, "-m", "pipeline", "run", "--retries", "0", MINARI_DATASETS_PATH=str(root))
    rounds = json.loads((repo / "artifacts" / "rounds" / "1" / "rollout" / "metrics.json").read_text())
    about = json.loads((repo / "artifacts" / "rounds" / "1" / "rollout.provenance.json").read_text())["about"]
    assert about == {"algo": "iql", "env": "door"}
    assert np.isfinite(rounds["final_normalized_score"])
    card = json.loads((repo / "artifacts" / "dataset" / "card.json").read_text())
    assert card["source"] == "D4RL/door/human-v2" and card["rows"] == 1200
