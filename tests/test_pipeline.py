"""Presets, the `python -m pipeline` commands, and the Prefect flows on a real tiny run."""

from __future__ import annotations

import shutil
import sys

import pytest
import yaml
from pipeline_project import ROOT, clone, dvc, env, finished_project, forget, ran_stages, sh, tree_digests

from cfdg.errors import ConfigError
from pipeline import sections
from pipeline.preset import apply_preset
from stages import params


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_project(tmp_path_factory)


def _params_copy(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_preset_merges_keeps_comments_and_writes_rounds_table(tmp_path):
    path = _params_copy(tmp_path)
    apply_preset(ROOT / "configs" / "tiny.yaml", path)
    text = path.read_text()
    assert "# agent / diffusion seed" in text  # comments survive
    raw = yaml.safe_load(text)
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    assert raw["diffusion"]["width"] == tiny["diffusion"]["width"]
    assert raw["agent"]["algo"] == "iql" and raw["dataset"]["source"] == "build"  # keys the preset leaves alone
    assert params.rounds(raw) == {k: k - 1 for k in range(1, tiny["rounds"] + 1)}
    apply_preset(ROOT / "configs" / "tiny.yaml", path, rounds=4)
    assert params.rounds(params.read_params(path)) == {1: 0, 2: 1, 3: 2, 4: 3}
    sections.load_all(path)


@pytest.mark.parametrize("algo", ["iql", "pex", "apl"])
def test_paper_presets_validate(tmp_path, algo):
    path = _params_copy(tmp_path)
    apply_preset(ROOT / "configs" / "paper" / f"{algo}.yaml", path)
    p = sections.load_all(path)
    assert p.sections["agent"].algo == algo
    assert p.sections["diffusion"].width == 1024 and p.sections["diffusion"].depth == 6
    sampling = p.sections["sampling"]
    assert sampling.steps == 128 and sampling.stochastic and sampling.generated_online_fraction == 0.8
    assert sampling.buffer == "fifo" and sampling.capacity == 1_000_000  # Algorithm 1: added to a 1M buffer
    assert len(p.rounds) == 10


def test_bad_preset_is_refused_and_params_untouched(tmp_path):
    path = _params_copy(tmp_path)
    before = path.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: two\n")
    with pytest.raises(ConfigError, match="rounds: must be the number of rounds"):
        apply_preset(bad, path)
    with pytest.raises(ConfigError, match="preset not found"):
        apply_preset(tmp_path / "missing.yaml", path)
    assert path.read_text() == before


def test_check_command_names_the_bad_key(tmp_path):
    path = _params_copy(tmp_path)
    ok = sh(ROOT, sys.executable, "-m", "pipeline", "check", "--params", str(path))
    assert "valid" in ok.stdout
    raw = yaml.safe_load(path.read_text())
    raw["diffusion"]["width"] = "wide"
    path.write_text(yaml.safe_dump(raw))
    bad = sh(ROOT, sys.executable, "-m", "pipeline", "check", "--params", str(path), check=False)
    assert bad.returncode == 2
    assert "params.yaml:diffusion.width" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_failed_round_is_retried_and_matches_an_uninterrupted_run(finished, tmp_path, monkeypatch):
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from pipeline.flows import ROUND_STAGES, cfdg_round

    # fit@2 onwards never ran (the stages before are reused to keep the test short).
    repo = clone(finished, tmp_path / "p")
    forget(repo, ["fit@2", "materialise@2", "report"])
    # The main command (Prefect, ephemeral server), with fit@2 made to crash.
    failed = sh(repo, sys.executable, "-m", "pipeline", "run", "--retries", "0", check=False, CFDG_FAIL_STAGE="fit@2")
    assert failed.returncode == 1, failed.stderr[-2000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("cfdg: fit@2: failing on purpose because CFDG_FAIL_STAGE"), failed.stderr[-2000:]
    assert last.endswith("; fix it and rerun cfdg run — rounds 0–1 and rollout@2 are kept"), last
    art, ref = repo / "artifacts", finished / "artifacts"
    assert tree_digests(art / "rounds" / "1") == tree_digests(ref / "rounds" / "1")  # earlier rounds intact
    assert (art / "rounds" / "2" / "agent.pt").exists() and not (art / "rounds" / "2" / "diffusion.pt").exists()

    # Retry the failed round as its own flow run (what the UI's deployment does). Its stages run
    # with the thread count of the uninterrupted run: CPU float reductions depend on it.
    monkeypatch.setenv("OMP_NUM_THREADS", env(repo)["OMP_NUM_THREADS"])
    with prefect_test_harness(server_startup_timeout=120):
        row = cfdg_round(2, root=str(repo), retries=0)
        assert row["ran"] == ["fit@2", "materialise@2"]
        assert Artifact.get("round-2-progress").data == 100.0
        assert Artifact.get("round-2-metrics") is not None
        # Run again: DVC skips every stage, and the UI shows them as Skipped, not as ordinary runs.
        again = cfdg_round(2, root=str(repo), retries=0, return_state=True)
        assert again.result()["ran"] == []
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[again.state_details.flow_run_id]))
            )
        assert sorted((r.name, r.state.name) for r in runs) == [(f"{s}@2", "Skipped") for s in sorted(ROUND_STAGES)]

    assert ran_stages(dvc(repo, "repro").stdout) == ["report"]
    assert tree_digests(art) == tree_digests(ref)  # byte-identical to the uninterrupted run


def test_serve_registers_the_run_and_the_round_deployments(tmp_path):
    from pipeline.flows import deployments

    deps = {d.name: d for d in deployments(str(tmp_path))}
    assert set(deps) == {"cfdg-run", "cfdg-round"}
    assert deps["cfdg-run"].parameters == {"root": str(tmp_path)}
    assert deps["cfdg-round"].parameters == {"root": str(tmp_path), "k": 1}
    assert deps["cfdg-round"].entrypoint.endswith("pipeline/flows.py:cfdg_round")


def test_one_cfdg_command_holds_the_pipeline_and_the_library_commands():
    out = sh(ROOT, sys.executable, "-m", "pipeline", "--help").stdout
    for command in (
        "run",
        "round",
        "serve",
        "server",
        "preset",
        "check",
        "table",
        "dataset",
        "store",
        "agent",
        "quality",
    ):
        assert command in out
    assert "--retries" in sh(ROOT, sys.executable, "-m", "pipeline", "run", "--help").stdout


def test_the_library_never_imports_the_orchestration_layers():
    """cfdg/ is the bottom layer: importing every module of it loads no pipeline/, stages/, Prefect or DVC."""
    code = (
        "import importlib, pkgutil, sys, cfdg\n"
        "for m in pkgutil.walk_packages(cfdg.__path__, 'cfdg.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'pipeline', 'stages', 'prefect', 'dvc'}))"
    )
    assert sh(ROOT, sys.executable, "-c", code).stdout.strip() == "[]"


PROJECT_PACKAGES = ("cfdg", "stages", "pipeline")


def replaced_library_names(source: str) -> list[str]:
    """`module.name = ...` (or setattr) on a project module the source imported: a run-time patch."""
    import ast

    tree = ast.parse(source)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {
                a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in PROJECT_PACKAGES
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROJECT_PACKAGES:
            base = ROOT / node.module.replace(".", "/")
            modules |= {
                a.asname or a.name for a in node.names if (base / f"{a.name}.py").is_file() or (base / a.name).is_dir()
            }
    hits = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args:
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for t in targets:
            while isinstance(t, ast.Attribute) and isinstance(t.value, ast.Attribute):
                t = t.value
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in modules:
                hits.append(f"{t.value.id}.{t.attr} (line {node.lineno})")
    return hits


def test_nothing_replaces_a_library_function_at_run_time():
    """Experiments and benches pass what they change as arguments (net=, normaliser=, a SamplingConfig)."""
    found = {
        str(path.relative_to(ROOT)): hits
        for folder in ("cfdg", "stages", "pipeline", "bench", "experiments")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (hits := replaced_library_names(path.read_text()))
    }
    assert not found, found
    # The check can fail: the patch the generator ablation once made.
    patch = "import cfdg.diffusion.train as train\nfrom cfdg.diffusion import sample\n"
    patch += "train.build_denoiser = f\nsetattr(sample, 'SOLVERS', {})\n"
    assert replaced_library_names(patch) == ["train.build_denoiser (line 3)", "sample.? (line 4)"]


def test_stage_output_is_split_on_progress_redraws():
    """Progress bars reach the Prefect log: '\r' redraws are lines of their own, bytes may split anywhere."""
    import io

    from pipeline.repro import split_output

    class Trickle(io.BytesIO):
        def read1(self, n: int = -1) -> bytes:
            return super().read1(3)  # a multi-byte character and every line end fall across reads

    data = "start\n 10%|#  | 1/10\r 20%|## | 2/10\r\nné done".encode()
    assert list(split_output(Trickle(data))) == [
        ("start", False),
        (" 10%|#  | 1/10", True),
        (" 20%|## | 2/10", True),
        ("", False),
        ("né done", False),
    ]


def test_report_artifact_embeds_its_pictures(tmp_path):
    """Relative image links break in the Prefect UI; the artifact carries the PNG bytes instead."""
    import base64

    from pipeline.flows import inline_images

    png = b"\x89PNG fake"
    (tmp_path / "learning_curve.png").write_bytes(png)
    text = "# Report\n![learning curve](learning_curve.png)\n![gone](missing.png)\n"
    out = inline_images(text, tmp_path)
    assert f"![learning curve](data:image/png;base64,{base64.b64encode(png).decode()})" in out
    assert "![gone](missing.png)" in out and out.startswith("# Report\n")


def test_flows_load_as_a_script_the_way_prefects_runner_loads_them():
    """`cfdg serve` deployments run `pipeline/flows.py` as a script (its folder first on sys.path):
    no module there may hide a package the flows import (a `pipeline/dvc.py` hid `dvc`)."""
    import subprocess

    code = (
        "from prefect.utilities.importtools import load_script_as_module as load; "
        "m = load('pipeline/flows.py'); print(sorted(n for n in dir(m) if n.startswith('cfdg_')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cfdg_round" in proc.stdout, proc.stdout
