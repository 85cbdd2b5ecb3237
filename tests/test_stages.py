"""Stages and dvc.yaml: params validation, the DAG, provenance, and real `dvc repro` behaviour."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
import yaml
from pipeline_project import ROOT, clone, dvc, finished_project, forget, ran_stages, set_params, sh, tree_digests

from cfdg.errors import ConfigError
from cfdg.io import digest
from cfdg.quality import QualityConfig
from pipeline import sections
from stages import params, provenance, runner

ROUND_STAGES = ("rollout", "fit", "materialise")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_project(tmp_path_factory)


def _write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


# --- params.yaml --------------------------------------------------------------------------


def test_default_and_preset_params_validate():
    p = sections.load_all(ROOT / "params.yaml")
    assert p.source == "build" and list(p.rounds) == list(range(1, len(p.rounds) + 1))
    assert tuple(sections.CONFIG_CLASSES) == params.SECTIONS == tuple(p.sections)
    for name in params.SECTIONS:
        assert isinstance(p.sections[name], sections.config_class(name))


def test_bad_value_names_the_key(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["quality"]["max_rows"] = "many"
    path = _write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"params.yaml:quality.max_rows: must be an integer"):
        sections.load_all(path)
    raw["quality"] = {"max_rowz": 5}
    path = _write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"params.yaml:quality: unknown key\(s\) \['max_rowz'\]"):
        sections.load_all(path)


def test_bad_top_level_seed_and_source(tmp_path):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="unknown top-level key"):
        params.read_params(_write(tmp_path, yaml.safe_dump({**base, "difusion": {}})))
    with pytest.raises(ConfigError, match=r"params.yaml:seed: must be a non-negative integer"):
        sections.load_all(_write(tmp_path, yaml.safe_dump({**base, "seed": -1})))
    with pytest.raises(ConfigError, match=r"params.yaml:dataset.source"):
        sections.load_all(_write(tmp_path, yaml.safe_dump({**base, "dataset": {**base["dataset"], "source": ""}})))
    with pytest.raises(ConfigError, match=r"params.yaml:dataset.torch_threads: must be an integer"):
        sections.load_all(
            _write(tmp_path, yaml.safe_dump({**base, "dataset": {**base["dataset"], "torch_threads": "two"}}))
        )
    with pytest.raises(ConfigError, match=r"dataset: unknown key\(s\) \['sauce'\]"):
        sections.load_all(_write(tmp_path, yaml.safe_dump({**base, "dataset": {**base["dataset"], "sauce": "x"}})))
    with pytest.raises(ConfigError, match="not found"):
        params.read_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"1": {"prev": 0}, "2": {"prev": 0}}, r"rounds.2.prev: must be 1"),
        ({"1": {"prev": 0}, "3": {"prev": 2}}, r"numbered 1..2 without gaps"),
        ({"one": {"prev": 0}}, r"key 'one' is not a round number"),
        ({}, r"non-empty mapping"),
        ({"1": {"prev": 0, "x": 1}}, r"rounds.1: must be \{prev: 0\}"),
        ({"01": {"prev": 0}}, r"key '01' must be a round number written plainly"),
        ({"1": {"prev": False}}, r"rounds.1.prev: must be 0"),
        ({"1": {"prev": 0.0}}, r"rounds.1.prev: must be 0"),
    ],
)
def test_rounds_table_is_checked(table, message):
    with pytest.raises(ConfigError, match=message):
        params.rounds({"rounds": table})


def test_rounds_table_roundtrip():
    assert params.rounds({"rounds": params.rounds_table(3)}) == {1: 0, 2: 1, 3: 2}


# --- the runner ---------------------------------------------------------------------------


def test_failure_hook_fails_the_named_stage_only(monkeypatch, capsys):
    calls = []
    monkeypatch.setenv(runner.FAIL_ENV, "fit@2, pretrain")
    assert runner.run_main("fit", lambda a: calls.append(a.round), ["--round", "2"], rounds=True) == 2
    assert "fit@2: failing on purpose because CFDG_FAIL_STAGE" in capsys.readouterr().err
    assert runner.run_main("fit", lambda a: calls.append(a.round), ["--round", "1"], rounds=True) == 0
    assert calls == [1]


def test_stage_reports_config_error_in_one_line(tmp_path, capsys):
    bad = _write(tmp_path, "seed: 0\nrounds: {'1': {prev: 0}}\nquality: {max_rows: 1}\n")
    from stages import materialise

    assert materialise.main(["--params", str(bad), "--round", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stage materialise@1: error:") and "quality.max_rows" in err and "\n" not in err


def test_derived_seeds_are_distinct_and_stable():
    seeds = {provenance.derive_seed(s, k, salt) for s in range(3) for k in range(4) for salt in ("fit", "materialise")}
    assert len(seeds) == 24
    assert provenance.derive_seed(0, 1, "fit") == provenance.derive_seed(0, 1, "fit")


# --- dvc.yaml -----------------------------------------------------------------------------


def _stage_params() -> dict[str, set[str]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        body = stage.get("do", stage)
        out[name] = {str(p) for p in body.get("params", [])}
    return out


def test_each_stage_declares_exactly_what_it_reads():
    declared = _stage_params()
    assert declared["dataset"] == {"dataset"}
    assert declared["pretrain"] == {"seed", "agent", "pretrain"}
    assert declared["rollout"] == {"rollout"}
    assert declared["fit"] == {"seed", "diffusion"}
    assert declared["materialise"] == {"seed", "sampling", "quality"}  # the variant comes from the checkpoint
    assert declared["report"] == {"rounds", "report", "quality"}
    assert not any("diffusion" in declared[s] for s in ("dataset", "pretrain", "rollout", "materialise"))
    assert not any("sampling" in declared[s] for s in declared if s != "materialise")


def test_dvc_sees_one_stage_per_round_and_the_dag(tmp_path):
    repo = tmp_path / "p"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    sh(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    n = len(params.rounds(params.read_params(repo / "params.yaml")))
    names = [line.split()[0] for line in dvc(repo, "stage", "list").stdout.splitlines()]
    expected = ["dataset", "pretrain"] + [f"{s}@{k}" for s in ROUND_STAGES for k in range(1, n + 1)] + ["report"]
    assert sorted(names) == sorted(expected)
    dag = dvc(repo, "dag", "--dot", f"materialise@{n}").stdout
    for k in range(1, n + 1):
        assert f"rollout@{k}" in dag and f"fit@{k}" in dag
    assert "report" not in dag


# --- real runs (tiny preset) ----------------------------------------------------------------


@pytest.mark.slow
def test_full_repro_writes_every_artifact_with_provenance(finished):
    rounds = params.rounds(params.read_params(finished / "params.yaml"))
    art = finished / "artifacts"
    sh(finished, sys.executable, "-m", "cfdg", "store", "validate", "artifacts/dataset/offline.zarr")
    for k in [0, *rounds]:
        d = art / "rounds" / str(k)
        for name in ("agent.pt", "online.zarr", "synthetic.zarr"):
            assert (d / name).exists(), f"round {k}: {name} missing"
        sh(finished, sys.executable, "-m", "cfdg", "store", "validate", f"artifacts/rounds/{k}/synthetic.zarr")
    last = max(rounds)
    prov = json.loads((art / "rounds" / str(last) / "fit.provenance.json").read_text())
    assert prov["stage"] == f"fit@{last}"
    assert prov["inputs"]["online"]["sha256"] == digest(art / "rounds" / str(last) / "online.zarr")
    assert prov["params"]["diffusion"]["variant"] == "cfdg" and prov["code_version"].startswith("0.")
    quality = json.loads((art / "rounds" / str(last) / "quality.json").read_text())
    for side in ("offline_vs_online", "generated_vs_online", "generated_all_vs_online"):
        for div in ("state", "action", "transition"):
            assert 0.0 <= quality[side][div]["classifier"] <= 0.7
    # Table 2's "generated" is the online-labelled 80% of a cfdg store; the whole store is beside it.
    rows = quality["rows"]
    assert rows["generated_online"] == round(0.8 * rows["generated"])
    # Ground truth beside the JS: real rows replay exactly in the simulator, generated ones are measured.
    fidelity = quality["fidelity"]
    for real in ("online", "offline"):
        assert fidelity[real]["next_state_rel_error"] <= 0.01 and fidelity[real]["share_checked"] >= 0.9
    assert fidelity["generated"]["rows_sampled"] > 0 and quality["memorisation"]["ratio"] > 0
    from cfdg.store import read_attrs

    synth = read_attrs(art / "rounds" / str(last) / "synthetic.zarr")
    assert synth["kind"] == "synthetic" and synth["round"] == last
    assert synth["inputs"]["diffusion"] == digest(art / "rounds" / str(last) / "diffusion.pt")
    stage_metrics = f"artifacts/rounds/{last}/materialise/metrics.json"  # not declared: read by path
    metrics = dvc(finished, "metrics", "show", "--json", stage_metrics).stdout
    assert "js_generated_state" in json.loads(metrics)[""]["data"][stage_metrics]["data"]
    plots = json.loads(dvc(finished, "plots", "show", "--json").stdout)["data"]
    curve = plots["learning curve"][0]["content"]["data"]["values"]
    assert curve[0]["env_steps"] == 0 and len(curve) == len(rounds) + 1
    assert any(name.endswith("tsne.png") for name in plots)


def _leaves(value, prefix=""):
    """(dotted name, value) of every leaf of a nested metrics dict."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), value


def _stage_metrics_paths(rounds) -> list[str]:
    """Every stage's own metrics file: outputs of their stages, readable by path."""
    per_round = [f"artifacts/rounds/{k}/{stage}/metrics.json" for k in rounds for stage in ROUND_STAGES]
    return ["artifacts/dataset/metrics.json", "artifacts/rounds/0/metrics.json", *per_round]


def _declared_metrics() -> set[str]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = {str(m) for m in spec.get("metrics", [])}
    for stage in spec["stages"].values():
        declared |= {str(m) for m in stage.get("do", stage).get("metrics", [])}
    return declared


@pytest.mark.slow
def test_dvc_metrics_are_numbers_in_a_readable_table(finished):
    """`dvc metrics show` is the run's headline only, a table that fits a 200-column terminal; every
    stage's own metrics file is still there, numbers only (text is in the provenance files), by path."""
    assert _declared_metrics() == {"artifacts/report/metrics.json"}
    shown = json.loads(dvc(finished, "metrics", "show", "--json").stdout)
    headline = next(iter(shown.values()))["data"]
    assert set(headline) == {"artifacts/report/metrics.json"}
    table = dvc(finished, "metrics", "show").stdout.splitlines()
    assert table and max(len(line) for line in table) <= 200, "\n".join(table)
    rounds = params.rounds(params.read_params(finished / "params.yaml"))
    paths = _stage_metrics_paths(rounds)
    by_path = next(iter(json.loads(dvc(finished, "metrics", "show", "--json", *paths).stdout).values()))["data"]
    assert set(by_path) == set(paths)
    for path, entry in {**headline, **by_path}.items():
        assert "error" not in entry, (path, entry)
        leaves = dict(_leaves(entry["data"]))
        assert leaves, f"{path}: no metrics"
        texts = {k: v for k, v in leaves.items() if not isinstance(v, int | float) or isinstance(v, bool)}
        assert not texts, f"{path}: not numbers: {texts}"
    about = json.loads((finished / "artifacts" / "rounds" / "1" / "rollout.provenance.json").read_text())["about"]
    assert about == {"algo": "iql", "env": "hopper"}
    plots = json.loads(dvc(finished, "plots", "show", "--json").stdout)["data"]
    curve = plots["artifacts/rounds/1/rollout/plots/custom/eval.json"][0]["content"]["data"]["values"]
    assert curve and all(isinstance(p["normalized_score"], float) for p in curve)


@pytest.mark.slow
def test_pipeline_doc_names_every_metric_key(finished):
    """docs/pipeline.md's metrics table names every key each metrics file holds (the tiny run: IQL + CFDG)."""
    doc = (ROOT / "docs" / "pipeline.md").read_text()
    rows = {}
    for line in doc.splitlines():
        match = re.match(r"\| `(artifacts/[^`]+/metrics\.json)`[^|]*\|[^|]*\|(.*)\|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`([a-z_]+)`", match.group(2)))
    rounds = params.rounds(params.read_params(finished / "params.yaml"))
    for path in ["artifacts/report/metrics.json", *_stage_metrics_paths(rounds)]:
        pattern = re.sub(r"rounds/[1-9][0-9]*/", "rounds/<k>/", path)
        assert pattern in rows, f"docs/pipeline.md does not list {pattern}"
        written = set(json.loads((finished / path).read_text()))
        assert written <= rows[pattern], f"{path}: keys not in docs/pipeline.md: {written - rows[pattern]}"


@pytest.mark.slow
def test_second_repro_does_nothing(finished, tmp_path):
    repo = clone(finished, tmp_path / "p")
    out = dvc(repo, "repro").stdout
    assert ran_stages(out) == [] and "Data and pipelines are up to date" in out
    assert "up to date" in dvc(repo, "status").stdout


@pytest.mark.slow
def test_deleted_output_is_restored_or_rerun_alone(finished, tmp_path):
    repo = clone(finished, tmp_path / "p")
    target = repo / "artifacts" / "rounds" / "2" / "synthetic.zarr"
    before = digest(target)
    shutil.rmtree(target)
    out = dvc(repo, "repro", "materialise@2").stdout  # still in the DVC cache: checked out, nothing runs
    assert ran_stages(out) == [] and "'materialise@2' is cached" in out
    assert digest(target) == before
    forget(repo, ["materialise@2"])  # now gone from the cache too: only materialise@2 must run again
    out = dvc(repo, "repro", "materialise@2").stdout
    assert ran_stages(out) == ["materialise@2"]
    assert digest(target) == before  # same inputs, same bytes


@pytest.mark.slow
def test_diffusion_param_change_reruns_fit_materialise_and_what_follows(finished, tmp_path):
    repo = clone(finished, tmp_path / "p")
    before = tree_digests(repo / "artifacts" / "dataset") | tree_digests(repo / "artifacts" / "rounds" / "0")
    raw = params.read_params(repo / "params.yaml")
    set_params(repo, diffusion={"p_uncond": float(raw["diffusion"].get("p_uncond", 0.1)) + 0.05})
    n = len(params.rounds(raw))
    ran = ran_stages(dvc(repo, "repro").stdout)
    expected = {f"fit@{k}" for k in range(1, n + 1)} | {f"materialise@{k}" for k in range(1, n + 1)}
    expected |= {f"rollout@{k}" for k in range(2, n + 1)} | {"report"}
    assert set(ran) == expected
    after = tree_digests(repo / "artifacts" / "dataset") | tree_digests(repo / "artifacts" / "rounds" / "0")
    assert after == before


@pytest.mark.slow
def test_sampling_param_change_refits_nothing_and_fifo_carries_rows(finished, tmp_path):
    """A `sampling.*` change reruns materialise and what follows; no fit reruns on the data it had."""
    from cfdg.store import read_store

    repo = clone(finished, tmp_path / "p")
    raw = params.read_params(repo / "params.yaml")
    n, n_rows = len(params.rounds(raw)), int(raw["sampling"]["n_rows"])
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    model_before = digest(repo / "artifacts" / "rounds" / "1" / "diffusion.pt")
    w = float(raw["sampling"].get("guidance_w", 1.0)) + 1.0
    set_params(repo, sampling={"guidance_w": w, "buffer": "fifo", "capacity": 10 * n_rows})
    status = dvc(repo, "status").stdout
    assert "materialise@1" in status and "fit@1" not in status
    # Round 1 alone: only its materialise runs, on the same model.
    assert ran_stages(dvc(repo, "repro", "materialise@1").stdout) == ["materialise@1"]
    assert digest(repo / "artifacts" / "rounds" / "1" / "diffusion.pt") == model_before
    ran = set(ran_stages(dvc(repo, "repro").stdout))
    # Later rounds rerun because their agent trained on the new synthetic data and so collected
    # different online data: fit@k (k >= 2) reruns for its new data, never for a sampling knob.
    expected = {f"materialise@{k}" for k in range(2, n + 1)} | {f"rollout@{k}" for k in range(2, n + 1)}
    expected |= {f"fit@{k}" for k in range(2, n + 1)} | {"report"}
    assert ran == expected
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for k in range(1, n + 1):
        assert lock[f"fit@{k}"]["params"] == lock_before[f"fit@{k}"]["params"]
    # fifo: round 2's store = round 1's rows, then round 2's own samples.
    r1, _ = read_store(repo / "artifacts" / "rounds" / "1" / "synthetic.zarr")
    r2, attrs2 = read_store(repo / "artifacts" / "rounds" / "2" / "synthetic.zarr")
    assert len(r1) == n_rows and len(r2) == 2 * n_rows
    assert (r2.observations[:n_rows] == r1.observations).all()
    assert attrs2["params"]["sampling"]["guidance_w"] == w and "previous_synthetic" in attrs2["inputs"]


@pytest.mark.slow
def test_users_d4rl_file_is_imported_instead_of_building(finished, tmp_path):
    from cfdg.d4rl import export_d4rl
    from cfdg.store import read_attrs

    hdf5 = export_d4rl(finished / "artifacts" / "dataset" / "offline.zarr", tmp_path / "mine.hdf5")
    repo = clone(finished, tmp_path / "p")
    set_params(repo, dataset={"source": str(hdf5)})
    assert ran_stages(dvc(repo, "repro", "dataset").stdout) == ["dataset"]
    attrs = read_attrs(repo / "artifacts" / "dataset" / "offline.zarr")
    assert attrs["kind"] == "offline" and attrs["counts"]["rows"] > 0
    prov = json.loads((repo / "artifacts" / "dataset" / "dataset.provenance.json").read_text())
    assert prov["params"]["source"] == str(hdf5) and prov["inputs"]["source"]["sha256"] == digest(hdf5)
    assert "pretrain" in dvc(repo, "status").stdout  # everything downstream is now stale


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["none", "synther", "joint"])
def test_fit_and_materialise_other_variants(finished, tmp_path, variant):
    """`none` writes an empty synthetic store (the base algorithm); `synther` and `joint` label every row online."""
    from cfdg.config import from_mapping
    from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
    from cfdg.store import read_store
    from stages.fit import fit_stage
    from stages.materialise import materialise_stage

    raw = params.read_params(finished / "params.yaml")
    cfg = from_mapping(DiffusionConfig, {**raw["diffusion"], "variant": variant}, "diffusion")
    sampling = from_mapping(SamplingConfig, raw["sampling"], "sampling")
    offline = finished / "artifacts" / "dataset" / "offline.zarr"
    online = finished / "artifacts" / "rounds" / "1" / "online.zarr"
    out = tmp_path / "rounds" / "1"
    metrics = fit_stage(offline, online, cfg, 0, 1, out / "diffusion.pt", progress=False)
    quality_cfg = QualityConfig(max_rows=200)
    quality = materialise_stage(
        out / "diffusion.pt", offline, online, sampling, quality_cfg, 0, 1, out / "synthetic.zarr", False
    )
    data, attrs = read_store(out / "synthetic.zarr")
    assert attrs["kind"] == "synthetic" and attrs["params"]["variant"] == variant
    if variant == "none":
        assert len(data) == 0 and "generated_vs_online" not in quality
    else:
        assert len(data) == sampling.n_rows and data.labels.min() == 1
        n_offline = len(read_store(offline)[0]) if variant == "joint" else 0
        assert metrics["n_train"] == {"offline": n_offline, "online": len(read_store(online)[0])}
        assert set(quality["generated_vs_online"]) == {"state", "action", "transition"}
    assert set(quality["offline_vs_online"]) == {"state", "action", "transition"}


def test_rounds_read_the_previous_model_and_store():
    """fit@k may warm-start from round k-1's model, materialise@k may carry round k-1's store (fifo)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "artifacts/rounds/${item.prev}/diffusion.pt" in spec["fit"]["do"]["deps"]
    assert "artifacts/rounds/${item.prev}/synthetic.zarr" in spec["materialise"]["do"]["deps"]
    assert "artifacts/rounds/0/diffusion.pt" in spec["pretrain"]["outs"]  # round 0: the no-model placeholder


@pytest.mark.slow
def test_warm_started_fit_continues_from_round_k_minus_1(finished, tmp_path):
    from cfdg.config import from_mapping
    from cfdg.diffusion.checkpoint import checkpoint_variant
    from cfdg.diffusion.config import DiffusionConfig
    from stages.fit import fit_stage

    raw = params.read_params(finished / "params.yaml")
    cfg = from_mapping(DiffusionConfig, {**raw["diffusion"], "warm_start": True}, "diffusion")
    rounds = finished / "artifacts" / "rounds"
    assert checkpoint_variant(rounds / "0" / "diffusion.pt") == "none"
    offline = finished / "artifacts" / "dataset" / "offline.zarr"
    first = fit_stage(
        offline,
        rounds / "1" / "online.zarr",
        cfg,
        0,
        1,
        tmp_path / "1" / "diffusion.pt",
        False,
        prev_model=rounds / "0" / "diffusion.pt",
    )
    second = fit_stage(
        offline,
        rounds / "2" / "online.zarr",
        cfg,
        0,
        2,
        tmp_path / "2" / "diffusion.pt",
        False,
        prev_model=tmp_path / "1" / "diffusion.pt",
    )
    assert not first["warm_started"] and second["warm_started"]
    assert first["train_steps_effective"] == second["train_steps_effective"] == cfg.train_steps  # equal compute
    prov = json.loads((tmp_path / "2" / "fit.provenance.json").read_text())
    assert prov["inputs"]["previous_diffusion"]["sha256"] == digest(tmp_path / "1" / "diffusion.pt")
    assert "previous_diffusion" not in json.loads((tmp_path / "1" / "fit.provenance.json").read_text())["inputs"]
