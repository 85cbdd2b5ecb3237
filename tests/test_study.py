"""Studies: a grid of real pipeline runs (real dvc repro in git worktrees sharing one DVC cache,
real Prefect), bad study files refused before anything starts, the paper's grids counted, and
the same study on a real local Prefect server with a work pool, two workers and a DVC remote, and
a study SIGKILLed mid-cell resuming. One tiny study (module fixture) serves them all.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pipeline_project import ROOT, commit, dvc, env, make_project, sh, start_server, stop

from cfdg.errors import ConfigError
from pipeline.study.spec import load_study

TINY = "configs/study/tiny.yaml"
FAILING = "hopper-mr-iql-cfdg-s1"
STUDY = (sys.executable, "-m", "pipeline.study")


# --------------------------------------------------------------------------------------------
# The study file: cells, and bad input


def test_tiny_study_cells():
    study = load_study(TINY, ROOT)
    names = [c.name for c in study.cells]
    assert names == [
        "hopper-mr-iql-none-s0",
        "hopper-mr-iql-none-s1",
        "hopper-mr-iql-cfdg-s0",
        "hopper-mr-iql-cfdg-s1",
        "hopper-mr-iql-wo-guidance-s0",
        "hopper-mr-iql-wo-offline-da-s0",
    ]
    none0, cfdg1 = study.cell("hopper-mr-iql-none-s0"), study.cell("hopper-mr-iql-cfdg-s1")
    assert none0.params["diffusion"]["variant"] == "none" and none0.params["seed"] == 0
    assert cfdg1.params["diffusion"]["variant"] == "cfdg" and cfdg1.params["seed"] == 1
    assert list(cfdg1.params["rounds"]) == ["1"]  # the study's `rounds: 1` over the tiny preset's 2
    assert cfdg1.params["dataset"]["medium_steps"] == 1000  # the tiny preset under the study
    ablation = study.cell("hopper-mr-iql-wo-offline-da-s0")
    assert ablation.ablation == "wo-offline-da" and ablation.params["diffusion"]["variant"] == "cfdg"
    assert ablation.params["sampling"]["generated_online_fraction"] == 1.0
    assert study.cell("hopper-mr-iql-wo-guidance-s0").params["diffusion"]["variant"] == "joint"


def test_the_study_package_imports_one_way_through_public_names():
    """Each module of pipeline/study/ imports only the modules listed above it in the package's
    docstring, anywhere in the file (a function-local import is no way around it), and only
    public names: a loop or a reach into another module's privates fails here."""
    import ast

    import pipeline.study

    package = ROOT / "pipeline" / "study"
    listed = [ln.split()[0] for ln in pipeline.study.__doc__.splitlines() if ln.startswith("    ")]
    order = [m.removesuffix(".py") for m in listed if m.endswith(".py")]
    assert sorted(order) == sorted(p.stem for p in package.glob("*.py") if not p.stem.startswith("__")), order
    for i, name in enumerate(order):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline.study"):
                target = node.module.removeprefix("pipeline.study").lstrip(".")
                assert target in order[:i], f"{name}.py imports {node.module}, not above it in {order}"
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name}.py imports private {private} from {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("pipeline.study") for a in node.names), f"{name}.py: {ast.dump(node)}"
    assert "import" not in "".join(ln for ln in (package / "__init__.py").read_text().split('"""')[2:]), (
        "pipeline/study/__init__.py imports nothing"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("paper-table1", 12 * 3 * 2 * 5 + 4 * 2 * 2 * 5),
        ("paper-table3", 12 * 3 * 5),
        ("paper-fig2", 12 * 4 * 5),
        ("cpu", 3 * 5),
    ],
)
def test_paper_grids_cell_counts(name, expected):
    # No D4RL files here: everything but the files' presence is validated.
    study = load_study(f"configs/study/{name}.yaml", ROOT, check_files=False)
    assert len(study.cells) == expected
    assert len({c.name for c in study.cells}) == expected
    datasets = {c.dataset for c in study.cells}
    assert "hopper-medium-replay-v2" in datasets or name == "cpu"
    by_algo = {c.algo for c in study.cells}
    if name == "paper-table1":
        assert by_algo == {"iql", "pex", "apl"}
        assert {c.dataset for c in study.cells if c.algo == "apl"} == {d for d in datasets if "antmaze" not in d}
        iql = study.cells[0].params
        assert (
            iql["pretrain"]["steps"] == 1_000_000
            and iql["rollout" if "rollout" in iql else "online"]["steps"] == 100_000
        )
        assert len(iql["rounds"]) == 10
        ant = next(c for c in study.cells if c.dataset.startswith("antmaze"))
        assert ant.params["agent"]["iql_tau"] == 0.9 and ant.params["agent"]["reward_shift"] == -1.0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


BASE = "preset: configs/tiny.yaml\naxes:\n  algo: [iql]\n  seed: [0]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("axes:\n  algorithm: [iql]\n", "unknown axis 'algorithm'"),
        (BASE + "ablations:\n  x: {diffusion: {no_such_key: 1}}\n", "diffusion.no_such_key is not a params key"),
        (BASE.replace("seed: [0]", "seed: [0, 0]"), "duplicate cell 'hopper-medium-replay-iql-cfdg-s0'"),
        (BASE.replace("algo: [iql]", "algo: [iql, dqn]"), "cell hopper-medium-replay-dqn-cfdg-s0"),
        (BASE + "params: {pretrain: {steps: -3}}\n", "pretrain.steps"),
        (BASE + "parallel: 3\n", "unknown key 'parallel'"),
        (
            BASE.replace("axes:\n", "axes:\n  dataset: [no-such-dataset-v2]\n"),
            "dataset.source: D4RL dataset 'no-such-dataset-v2' not found",
        ),
    ],
)
def test_bad_study_file_is_one_line_naming_it(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_study(_write(tmp_path, text), ROOT)


def test_bad_study_exits_2_and_starts_nothing(tmp_path):
    project = make_project(tmp_path / "project", preset="")
    bad = project / "bad.yaml"
    bad.write_text(BASE + "ablations:\n  x: {diffusion: {no_such_key: 1}}\n")
    proc = sh(project, *STUDY, "run", str(bad), check=False, PREFECT_HOME=str(tmp_path / "prefect"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "diffusion.no_such_key" in lines[0], proc.stderr
    assert not (project / "studies").exists()  # no workspace made
    assert not (tmp_path / "prefect").exists()  # Prefect never started


# --------------------------------------------------------------------------------------------
# A tiny study end to end: parallel, one cell failed, rerun retries it alone


def _states(project: Path, study: str = "tiny") -> dict[str, dict]:
    cells = project / "studies" / study / "cells"
    return {p.stem: json.loads(p.read_text()) for p in sorted(cells.glob("*.json"))}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    project = make_project(base / "project", preset="")
    prefect_home = base / "prefect"
    first = sh(  # retries on: a bad input (here the injected failure) must retry neither the stage nor the cell
        project, *STUDY, "run", TINY, "--parallel", "2", "--retries", "1", "--stage-retries", "1", check=False,
        CFDG_FAIL_CELL=f"{FAILING}:fit@1", PREFECT_HOME=str(prefect_home),
    )  # fmt: skip
    after_first = _states(project)
    second = sh(project, *STUDY, "run", TINY, "--parallel", "2", check=False, PREFECT_HOME=str(prefect_home))
    return {"project": project, "first": first, "after_first": after_first, "second": second, "prefect": prefect_home}


@pytest.mark.slow
def test_failed_cell_is_retried_alone_and_loses_nothing(tiny_study):
    first, second, before = tiny_study["first"], tiny_study["second"], tiny_study["after_first"]
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-2000:]
    assert f"cell {FAILING} failed: fit@1: failing on purpose because CFDG_FAIL_STAGE" in first.stderr
    assert "fix it and rerun cfdg study run — round 0 and rollout@1 are kept" in first.stderr
    assert before[FAILING]["status"] == "failed" and before[FAILING]["failed_stage"] == "fit@1"
    assert set(before[FAILING]["stages"]) == {"dataset", "pretrain", "rollout@1", "fit@1"}
    assert all(s["status"] == "done" for name, s in before.items() if name != FAILING)

    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "6 cells, 5 already finished, 0 failed" in second.stdout
    after = _states(tiny_study["project"])
    assert all(s["status"] == "done" for s in after.values())
    for name, s in after.items():
        if name != FAILING:
            assert s == before[name], f"finished cell {name} was touched by the rerun"
    stages = after[FAILING]["stages"]
    assert {t: s["last"] for t, s in stages.items()} == {
        "dataset": "unchanged",
        "pretrain": "unchanged",
        "rollout@1": "unchanged",  # kept from the failed run
        "fit@1": "ran",
        "materialise@1": "ran",
        "report": "ran",
    }


@pytest.mark.slow
def test_cells_run_in_parallel_and_share_stages_through_the_cache(tiny_study):
    states = tiny_study["after_first"]
    done = [s for s in states.values() if s["status"] == "done"]
    spans = sorted((s["started"], s["finished"]) for s in done)
    assert any(a[1] > b[0] for a, b in itertools.pairwise(spans)), f"no two cells overlapped: {spans}"

    final = _states(tiny_study["project"])
    dataset_ran = [n for n, s in final.items() if s["stages"]["dataset"]["ran"]]
    assert len(dataset_ran) == 1, dataset_ran  # one dataset for all six cells ...
    restored = [n for n, s in final.items() if s["stages"]["dataset"]["restored"]]
    assert len(restored) == 5, restored  # ... the others checked it out of the shared cache
    # Pretraining depends on the seed only: computed once per seed. Round 1's rollout has no
    # synthetic data before it, so base and CFDG of a seed share it too.
    for target in ("pretrain", "rollout@1"):
        ran = sorted(n for n, s in final.items() if s["stages"][target]["ran"])
        assert len(ran) == 2 and {n[-2:] for n in ran} == {"s0", "s1"}, (target, ran)
    # Every cell is a complete pipeline run in its own workspace, with DVC's record of it.
    for name in final:
        ws = tiny_study["project"] / "studies" / "tiny" / "cells" / name
        assert "Data and pipelines are up to date" in dvc(ws, "status").stdout
        assert (ws / "artifacts" / "report" / "summary.json").is_file()


@pytest.mark.slow
def test_each_cell_is_a_prefect_flow_run_named_after_it(tiny_study):
    with sqlite3.connect(tiny_study["prefect"] / "prefect.db") as db:
        runs = db.execute("select name, state_type from flow_run").fetchall()
    names = {n for n, _ in runs}
    assert {f"hopper-mr-iql-{v}-s{s}" for v in ("none", "cfdg") for s in (0, 1)} <= names
    assert "study-tiny" in names
    failed = [n for n, st in runs if st == "FAILED"]
    assert failed.count(FAILING) == 1, "the failed cell (a bad input) was retried"
    with sqlite3.connect(tiny_study["prefect"] / "prefect.db") as db:
        attempts = [m for (m,) in db.execute("select message from log where message like '%fit@1 failed (attempt%'")]
    assert len(attempts) == 1 and "(attempt 1/2)" in attempts[0], attempts  # nor was its stage


@pytest.mark.slow
def test_report_tables_and_curves(tiny_study):
    report = tiny_study["project"] / "results" / "tiny" / "report"
    table1 = (report / "table1.md").read_text()
    assert "IQL Base" in table1 and "IQL CFDG" in table1 and table1.count("(n=2)") == 2
    table2 = (report / "table2.md").read_text()
    assert "**IQL on hopper-mr**" in table2 and "| Round | Divergence | Offline | CFDG |" in table2
    assert "\n| 1 | state | " in table2 and "| 1 | next-state rel. error |" in table2
    table3 = (report / "table3.md").read_text()
    assert "| Dataset | Algorithm | wo-guidance | wo-offline-da | CFDG |" in table3
    assert "| hopper-mr | IQL |" in table3
    compute = (report / "compute.md").read_text()
    assert "| IQL | Base |" in compute and "| IQL | CFDG |" in compute
    assert (report / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((report / "results.json").read_text())
    assert len(results) == 6
    # Table 1's numbers are the cells' own metrics files, aggregated.
    scores = [results[f"hopper-mr-iql-cfdg-s{s}"]["curve"][-1][1] for s in (0, 1)]
    mean = sum(scores) / 2
    assert f"{mean:.1f} ± {abs(scores[0] - scores[1]) / 2**0.5:.1f} (n=2)" in table1  # sample std
    for s in (0, 1):
        cell = tiny_study["project"] / "studies" / "tiny" / "cells" / f"hopper-mr-iql-cfdg-s{s}"
        rollout = json.loads((cell / "artifacts" / "rounds" / "1" / "rollout" / "metrics.json").read_text())
        assert rollout["normalized_score"] == pytest.approx(scores[s])


@pytest.mark.slow
def test_report_rebuilds_from_committed_results_on_a_fresh_clone(tiny_study, tmp_path):
    """Each finished cell's results (no artifacts) land in results/<study>/cells/; committed, they
    rebuild every table on a clone with no workspace and no DVC cache, and no cell reruns."""
    project = tiny_study["project"]
    results = project / "results" / "tiny"
    cells = sorted((results / "cells").glob("*.json"))
    assert len(cells) == 6
    rec = json.loads(cells[0].read_text())
    assert rec["digest"] and rec["commit"] and rec["stages"] and rec["curve"]
    assert "1" in rec["rounds"] and "rollout" in rec["rounds"]["1"]
    assert not list(results.rglob("*.zarr")) and not list(results.rglob("*.pt"))
    commit(project, "study results")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    assert not (clone / "studies").exists()
    sh(clone, *STUDY, "report", TINY, PREFECT_HOME=str(tmp_path / "prefect"))
    again = json.loads((clone / "results" / "tiny" / "report" / "results.json").read_text())
    assert again == json.loads((results / "report" / "results.json").read_text())
    assert (clone / "results" / "tiny" / "report" / "table1.md").read_text() == (
        results / "report" / "table1.md"
    ).read_text()
    from pipeline.study.workspace import Plan

    assert Plan.make(clone, TINY).pending() == []  # `study run` would skip every cell


@pytest.mark.slow
def test_report_checks_the_committed_cells_it_reads(tiny_study, tmp_path):
    """On a clone whose params.yaml defaults moved on, the report still reads every cell (a record
    holds its commit's defaults); it refuses, in one line naming the file, a malformed record, a
    record whose params contradict the study file, and mixed commits unless told; it flags a seed
    whose variants did not start from the same pretrained agent."""
    project = tiny_study["project"]
    commit(project, "study results")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["sampling"]["guidance_w"] = 3.0  # a default the tiny study does not pin
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    home = {"PREFECT_HOME": str(tmp_path / "prefect")}
    ok = sh(clone, *STUDY, "report", TINY, **home)
    assert "6 of 6 cells finished" in ok.stdout and "(6 cells)" in ok.stdout
    report = (clone / "results" / "tiny" / "report" / "report.md").read_text()
    assert report.count("- `results/tiny/cells/") == 6 and "same pretrained agent and round-1 data" in report

    cells = clone / "results" / "tiny" / "cells"
    target = cells / "hopper-mr-iql-none-s0.json"
    original = target.read_text()

    def refused(text: str, *flags: str) -> str:
        target.write_text(text)
        proc = sh(clone, *STUDY, "report", TINY, *flags, check=False, **home)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        return proc.stderr

    assert "hopper-mr-iql-none-s0.json: not valid JSON" in refused(original[: len(original) // 2])
    rec = json.loads(original)
    pinned = {**rec, "params": {**rec["params"], "rounds": {"1": {"prev": 0}, "2": {"prev": 1}}}}
    assert "params rounds = {'1': {'prev': 0}, '2': {'prev': 1}}, but the study file sets" in refused(
        json.dumps(pinned)
    )
    moved = {**rec, "params": {**rec["params"], "seed": 7}}
    err = refused(json.dumps(moved))
    assert "hopper-mr-iql-none-s0.json: params seed = 7, but the study file sets 0" in err
    other = {**rec, "commit": "f" * 40}
    err = refused(json.dumps(other))
    assert "cells come from 2 commits" in err and "--mix-commits" in err
    mixed = sh(clone, *STUDY, "report", TINY, "--mix-commits", **home)
    assert "ffffffffff (1 cells)" in mixed.stdout
    assert (clone / "results" / "tiny" / "report" / "table1.md").read_text().startswith("**Mixed commits**")

    target.write_text(json.dumps({**rec, "pretrain_score": rec["pretrain_score"] + 1.0}))
    sh(clone, *STUDY, "report", TINY, **home)
    paired = (clone / "results" / "tiny" / "report" / "paired.md").read_text()
    assert "seed 0: CFDG and Base differ in their pretrained agent" in paired or (
        "seed 0: Base and CFDG differ in their pretrained agent" in paired
    )
    target.write_text(original)


# --------------------------------------------------------------------------------------------
# Past one machine: a Prefect server, a work pool, two workers, a DVC remote


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One real Prefect server for the pool and the killed study (each start costs seconds)."""
    base = tmp_path_factory.mktemp("prefect-server")
    proc, api = start_server(base / "home", base / "server.log")
    try:
        yield {"PREFECT_API_URL": api, "PREFECT_HOME": str(base / "client")}
    finally:
        stop(proc, signal.SIGTERM)


@pytest.mark.slow
def test_study_on_a_work_pool_with_two_workers_matches_the_single_process_run(tiny_study, server, tmp_path):
    """Two cells, one per worker (each takes one at a time), computed in the workers' own cache
    and pushed to a DVC remote: the same numbers and the same Table 1 as the single-process run."""
    project = tiny_study["project"]
    pool_study = project / "configs" / "study" / "tiny-pool.yaml"
    doc = yaml.safe_load((project / TINY).read_text())
    doc.update(name="tiny-pool")
    doc.pop("ablations"), doc.pop("ablation_axes")
    doc["axes"]["variant"] = ["cfdg"]
    pool_study.write_text(yaml.safe_dump(doc))  # CFDG on both seeds: two cells of the tiny study
    commit(project, "two cells for the pool")

    base_env = env(project, **server)
    base_env.pop("PYTHONPATH")  # the workers run the code they clone, not this checkout
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, *cmd: str, **extra: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "w")
        p = subprocess.Popen(list(cmd), cwd=tmp_path, env={**base_env, **extra}, stdout=out, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    prefect = (sys.executable, "-m", "prefect")
    try:
        worker_env = {"CFDG_STUDY_CACHE": str(tmp_path / "worker-cache"), "CFDG_STUDY_WORKDIR": str(tmp_path / "work")}
        for i in (1, 2):
            start(f"worker{i}", *prefect, "worker", "start", "--pool", "cfdg-test", "--type", "process",
                  "--limit", "1", "--name", f"worker{i}", **worker_env)  # fmt: skip
        remote = tmp_path / "remote"
        run = subprocess.run(
            [*STUDY, "run", "configs/study/tiny-pool.yaml", "--pool", "cfdg-test", "--remote", str(remote)],
            cwd=project, env={**base_env, "PYTHONPATH": str(project)}, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
        worker_logs = "\n".join((logs / f"worker{i}.log").read_text()[-3000:] for i in (1, 2))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + worker_logs
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    from pipeline.study.report import table1

    states = _states(project, "tiny-pool")
    assert sorted(states) == ["hopper-mr-iql-cfdg-s0", "hopper-mr-iql-cfdg-s1"]
    assert all(s["status"] == "done" for s in states.values())
    assert len({s["worker_pid"] for s in states.values()}) == 2, "both workers should have run cells"
    for name in states:  # every cell's artifacts are in the remote: the local copy came from it
        ws = project / "studies" / "tiny-pool" / "cells" / name
        assert "in sync" in dvc(ws, "status", "--cloud").stdout
        assert "up to date" in dvc(ws, "status").stdout
    local = json.loads((project / "results" / "tiny" / "report" / "results.json").read_text())
    pooled = json.loads((project / "results" / "tiny-pool" / "report" / "results.json").read_text())
    assert pooled == {name: local[name] for name in states}
    records = [json.loads((project / "results" / "tiny" / "cells" / f"{name}.json").read_text()) for name in states]
    assert (project / "results" / "tiny-pool" / "report" / "table1.md").read_text() == table1(records)
    assert os.listdir(tmp_path / "worker-cache")  # the workers computed in their own cache


TWO_CELLS = """name: two
preset: configs/tiny.yaml
rounds: 1
axes:
  dataset:
    hopper-mr: {dataset: {env: hopper, kind: medium-replay}}
  algo: [iql]
  variant: [none]
  seed: [0, 1]
"""


@pytest.mark.slow
def test_a_study_killed_mid_cell_resumes_on_the_next_run(tiny_study, server, tmp_path):
    """SIGKILL a study (the whole process group: the study, its dvc repro and the stage) while its
    second cell runs: the rerun says the lock was stale, skips the finished cell and completes the
    other. The two cells are the tiny study's base cells under another study, so their stages come
    out of the project's DVC cache: what runs, and is killed, is the study machinery itself."""
    project = tiny_study["project"]
    (project / "configs" / "study" / "two.yaml").write_text(TWO_CELLS)
    commit(project, "a two-cell study")
    states = project / "studies" / "two" / "cells"
    cfdg = (sys.executable, "-m", "pipeline", "study", "run", "configs/study/two.yaml", "-j", "1")

    def status(cell: str) -> str | None:
        try:
            return json.loads((states / f"hopper-mr-iql-none-{cell}.json").read_text()).get("status")
        except (OSError, ValueError):
            return None

    log = tmp_path / "study.log"
    study = subprocess.Popen(
        cfdg, cwd=project, env=env(project, **server), stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while {status("s0"), status("s1")} != {"done", "running"}:
            assert study.poll() is None, (
                f"the study ended before it could be killed mid-cell:\n{log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "timed out waiting for one cell done, the other running"
            time.sleep(0.2)
    finally:
        stop(study)  # SIGKILL, the whole process group
    again = sh(project, *cfdg, check=False, **server)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 cells, 1 already finished, 0 failed" in again.stdout, again.stdout[-3000:] + again.stderr[-3000:]
    stale = [ln for ln in again.stderr.splitlines() if "stale lock" in ln]
    assert len(stale) == 1 and f"PID {study.pid}" in stale[0], again.stderr[-3000:]
    assert status("s0") == status("s1") == "done"


def test_paired_table_reads_noise_as_noise():
    """Paired differences over seeds with a t-interval: a clear gain is called one, a wobble is not."""
    from pipeline.study.report import paired_table, t_interval

    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2.0 - 4.303 * 1 / 3**0.5, abs=1e-3) and hi > 2.0

    def rec(variant, seed, pre, final):
        return {"dataset": "d", "algo": "apl", "variant": variant, "seed": seed, "ablation": None,
                "pretrain_score": pre, "final_score": final}  # fmt: skip

    base = [rec("none", s, 10.0, 20.0 + s) for s in range(5)]
    clear = [rec("cfdg", s, 10.0, 30.0 + s + 0.1 * (-1) ** s) for s in range(5)]
    wobble = [rec("synther", s, 10.0, 20.0 + s + 3.0 * (-1) ** s) for s in range(5)]
    table = paired_table(base + clear + wobble)
    assert "| d | APL | CFDG − Base | 5 | +10.0 |" in table and "better than base" in table
    assert "SynthER − Base | 5 |" in table and "no difference (interval holds 0)" in table
    assert "moved (≥ +5 points and > 2 std)" in table  # base: +10 … +14 over pretrained
    worse = [rec("none", s, 30.0, 20.0 + s) for s in range(5)]  # a base that got worse did not "move"
    assert "did not measurably improve" in paired_table(worse + clear)


def test_paired_table_sets_cfdg_against_every_other_generator():
    """CFDG − SynthER and CFDG − EDIS on the same seeds, each with its own interval and verdict."""
    from pipeline.study.report import paired_table

    def rec(variant, seed, final):
        return {"dataset": "d", "algo": "apl", "variant": variant, "seed": seed, "ablation": None,
                "pretrain_score": 0.0, "final_score": final}  # fmt: skip

    cells = [rec(v, s, f + s + 0.1 * (-1) ** s) for s in range(4) for v, f in (("none", 20.0), ("cfdg", 25.0))]
    cells += [rec("synther", s, 25.0 + s) for s in range(4)] + [rec("edis", s, 30.0 + s) for s in range(4)]
    table = paired_table(cells)
    assert "| d | APL | CFDG − SynthER | 4 | +0.0 |" in table
    assert "| d | APL | CFDG − EDIS | 4 | -5.0 |" in table and "CFDG worse" in table
    assert "CFDG − CFDG" not in table and "CFDG − Base" in table


def test_energy_table_shows_edis_energy_accuracy_per_round_against_chance():
    """The report's EDIS section: each energy's accuracy per round over the EDIS cells, chance named."""
    from pipeline.study.report import energy_table

    def rec(variant, seed, fit):
        return {"dataset": "d", "algo": "apl", "variant": variant, "seed": seed, "fit": fit}

    fit = {k: {"energy_negatives": 10, "energy_state_accuracy": 0.2 * k, "energy_transition_accuracy": 0.1}
           for k in (1, 2)}  # fmt: skip
    rows = [rec("edis", 0, fit), rec("edis", 1, {k: {**v, "energy_state_accuracy": 0.3 * k} for k, v in fit.items()})]
    lines = "\n".join(energy_table({("d", "apl"): [*rows, rec("cfdg", 0, {1: {"final_loss": 0.5}})]}))
    assert "chance 0.091" in lines and "| Round | state | transition |" in lines
    assert "| 1 | 0.250 ± 0.071 | 0.100 ± 0.000 |" in lines and "| 2 | 0.500 ± 0.141 |" in lines
    assert energy_table({("d", "apl"): [rec("cfdg", 0, {1: {"final_loss": 0.5}})]}) == []
