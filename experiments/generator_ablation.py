"""Generator ablation: why CFDG's online-labelled samples lose to `synther`'s, and what closes the gap.

    python experiments/generator_ablation.py export --artifacts artifacts --out rounds.npz   # round data of a run
    python experiments/generator_ablation.py run --data rounds.npz --out results.jsonl [--only baseline,balanced] \
        [--seeds 3] [--workers 12] [--deadline 480]
    python experiments/generator_ablation.py table results.jsonl [more.jsonl ...] \
        --md results/generator-ablation/ablation.md

Results: results/generator-ablation/ (the candidates) and results/generator-default/ (the default run's
generator); `CFDG_ABLATION_QUICK=1` shrinks fits and samples to a smoke test of the harness.

On each round's data of one pipeline run (round k = offline ∪ round k's online store; "fresh" rows
= the rows round k+1's online store adds, which no round-k model saw), every candidate is fitted
for 3 seeds at equal compute (same width, depth, fit steps, batch and sampler network calls unless
the candidate IS that knob), its online-labelled samples are drawn as materialise draws them, and
measured against ground truth and real data:
- fidelity (cfdg.fidelity, the simulator): next-state error relative to copying s, reward error;
- alignment (cfdg.quality, classifier JS in nats) of states and transitions to the round's online
  data and to the fresh rows;
- memorisation: median distance of a generated row to its nearest training row over the same for a
  fresh real row (≈ 1 healthy, ≪ 1 copying), in the round's standardised units.
References in the same run: the offline data and the real round data measured the same way.

Every candidate is fitted through the library's public calls only: the variant's `fit` with its
DiffusionConfig options (online share of the batches, FiLM conditioning), and, as arguments, the
previous round's network to continue from (`net=`) and a fixed normaliser (`normaliser=`); samples
come from `cfdg.diffusion.sample.sample` with the candidate's SamplingConfig (solver, steps, w).
Nothing in the library is replaced. `joint` is the unconditional model fitted on offline ∪ online.
The `default` candidates measure the default run's settings (params.yaml) against `synther` and
`joint` with the same settings, and `synther` with SynthER's own input conditioning.
Jobs run in parallel worker processes (one model each, GPU when present); every finished record is
appended to the output as a JSON line, so a run stopped at its deadline keeps what it finished.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments.*` for the worker processes

ENV = "hopper"
QUICK = os.environ.get("CFDG_ABLATION_QUICK") == "1"  # smoke test of the harness: tiny fits and samples
N_GEN = 500 if QUICK else 5000  # online-labelled samples per fit (the quality stage's max_rows)
FIDELITY_ROWS = 200 if QUICK else 2000
JS_ROWS = N_GEN
BASE = {"width": 256, "depth": 3, "train_steps": 5000, "batch_size": 256}  # the default run's denoiser
STEPS_SCALE = 0.02 if QUICK else 1.0


# ---------------------------------------------------------------- data


def export(artifacts: Path, out: Path) -> None:
    """offline + the last round's online store (earlier rounds are its prefixes, checked) into one .npz."""
    from cfdg.store import read_store

    offline, _ = read_store(artifacts / "dataset" / "offline.zarr")
    rounds = sorted(
        int(p.name) for p in (artifacts / "rounds").iterdir() if (p / "online.zarr").exists() and p.name != "0"
    )
    stores = [read_store(artifacts / "rounds" / str(k) / "online.zarr")[0] for k in rounds]
    last = stores[-1]
    for k, s in zip(rounds, stores, strict=True):
        for name, arr in s.arrays().items():
            if not np.array_equal(arr, getattr(last, name)[: len(s)]):
                raise SystemExit(f"round {k}'s online store is not a prefix of round {rounds[-1]}'s ({name})")
    arrays = {f"offline_{k}": v for k, v in offline.arrays().items()}
    arrays |= {f"online_{k}": v for k, v in last.arrays().items()}
    np.savez_compressed(out, round_rows=np.array([len(s) for s in stores]), **arrays)
    print(f"{out}: offline {len(offline)} rows, online rows per round {[len(s) for s in stores]}")


@dataclasses.dataclass
class RoundData:
    offline: Any  # Transitions
    online: list[Any]  # online store of round k (index k-1)
    fresh: list[Any | None]  # rows round k+1 adds (None for the last round)


def load(path: Path) -> RoundData:
    from cfdg.store import Transitions

    z = np.load(path)
    off = Transitions.from_arrays({k[len("offline_") :]: z[k] for k in z.files if k.startswith("offline_")})
    last = Transitions.from_arrays({k[len("online_") :]: z[k] for k in z.files if k.startswith("online_")})
    rows = [int(n) for n in z["round_rows"]]
    online = [last.take(slice(0, n)) for n in rows]
    fresh = [*(last.take(slice(a, b)) for a, b in itertools.pairwise(rows)), None]
    return RoundData(off, online, fresh)


# ---------------------------------------------------------------- candidates


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How samples are drawn; the default is the default run's materialise (w 1, 32 stochastic Heun steps)."""

    w: float = 1.0
    solver: str = "heun"  # heun | dpmpp2m
    steps: int = 32
    stochastic: bool = True
    precision: str = "fp32"  # fp32 | bf16 (a bf16 copy of the EMA network; sampler arithmetic stays fp32)

    @property
    def nfe(self) -> int:
        """Network calls (each of 2B rows when guided)."""
        return self.steps if self.solver == "dpmpp2m" else 2 * self.steps - 1

    @property
    def tag(self) -> str:
        kind = "dpm++2m" if self.solver == "dpmpp2m" else ("heun-sde" if self.stochastic else "heun-ode")
        return f"{kind}/{self.steps}/w{self.w:g}" + ("/bf16" if self.precision == "bf16" else "")


DEFAULT_SAMPLER = Sampler()


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    what: str
    variants: tuple[str, ...] = ("cfdg",)
    fit: tuple[tuple[str, Any], ...] = ()  # DiffusionConfig overrides
    online_share: float | None = None  # class-balanced batches: this share of each batch is online rows (cfdg)
    film: bool = False  # class + noise embedding modulates every block (FiLM) instead of entering at the input
    warm_start: bool = False  # round k starts from round k-1's weights
    steps_growth: bool = False  # fit steps = base x k in round k (the online data grows by one round each)
    # Normaliser statistics: of the rows trained on ("data", repeated rows included), of offline ∪ online
    # as stored ("rows": what a sampler-side class balance keeps), or of the online rows only ("online").
    norm: str = "data"
    samplers: tuple[Sampler, ...] = (DEFAULT_SAMPLER,)
    rounds: tuple[int, ...] | None = None  # None: every round
    sweep_round: int | None = None  # set: samplers after the first run in this round only (and for cfdg only)


def _c(name: str, what: str, **kw: Any) -> Candidate:
    if "fit" in kw:
        kw["fit"] = tuple(sorted(kw["fit"].items()))
    return Candidate(name, what, **kw)


ALL_VARIANTS = ("cfdg", "synther", "joint")
W_SWEEP = tuple(Sampler(w=w) for w in (0.0, 0.5, 2.0, 4.0))

CANDIDATES = [
    _c(
        "baseline",
        "default run: 256x3, 5K steps, p_uncond 0.1, EMA 0.995, w 1",
        variants=ALL_VARIANTS,
        samplers=(DEFAULT_SAMPLER, *W_SWEEP),
    ),
    _c("balanced", "class-balanced batches (half online rows)", online_share=0.5),
    _c("online_heavy", "batches 80% online rows", online_share=0.8),
    _c("film", "FiLM: class+noise embedding scales/shifts every block", film=True),
    _c("p_uncond_0.2", "label dropout 0.2", fit={"p_uncond": 0.2}),
    _c("p_uncond_0.3", "label dropout 0.3", fit={"p_uncond": 0.3}),
    _c("steps_growth", "fit steps 5K x k in round k", variants=ALL_VARIANTS, steps_growth=True),
    _c("wide_512x3", "width 512, depth 3", variants=ALL_VARIANTS, fit={"width": 512}),
    _c("deep_256x6", "width 256, depth 6", variants=("cfdg", "synther"), fit={"depth": 6}),
    _c("ema_0.999", "EMA decay 0.999", variants=("cfdg", "synther"), fit={"ema_decay": 0.999}),
    _c("ema_0.99", "EMA decay 0.99", variants=("cfdg", "synther"), fit={"ema_decay": 0.99}),
    _c("warm_start", "round k starts from round k-1's weights", variants=("cfdg", "synther"), warm_start=True),
]

# experiments/sampler_curves.py: the baseline model of round CURVE_ROUND sampled with each solver at 8..128 steps.
CURVE_ROUND = 1
CURVE_W = 0.5
CURVE_MODEL = {"online_share": 0.8}  # the model the curves sample: batches 80% online rows
CURVES = [
    _c(
        "curve_heun_ode",
        "deterministic Heun",
        rounds=(CURVE_ROUND,),
        samplers=tuple(Sampler(w=CURVE_W, steps=n, stochastic=False) for n in (4, 8, 16, 32, 64)),
        **CURVE_MODEL,
    ),
    _c(
        "curve_heun_sde",
        "stochastic EDM sampler, and the guidance sweep",
        rounds=(CURVE_ROUND,),
        samplers=(
            *(Sampler(w=CURVE_W, steps=n) for n in (8, 16, 32, 64, 128)),
            *(Sampler(w=w) for w in (0.0, 1.0, 2.0, 4.0)),
        ),
        **CURVE_MODEL,
    ),
    _c(
        "curve_dpmpp2m",
        "DPM-Solver++(2M), fp32 and bf16",
        rounds=(CURVE_ROUND,),
        samplers=(
            *(Sampler(w=CURVE_W, solver="dpmpp2m", steps=n) for n in (8, 16, 32, 64, 128)),
            *(Sampler(w=CURVE_W, solver="dpmpp2m", steps=n, precision="bf16") for n in (16, 32)),
        ),
        **CURVE_MODEL,
    ),
]


def candidate(name: str) -> Candidate:
    for c in CANDIDATES + CURVES + COMBOS:
        if c.name == name:
            return c
    raise SystemExit(f"unknown candidate {name!r}; known: {[c.name for c in CANDIDATES + CURVES + COMBOS]}")


W_SMALL = (Sampler(w=0.0), Sampler(w=0.5), DEFAULT_SAMPLER)
# The default run's sampler since the ablation (params.yaml sampling:): 64 stochastic Heun steps, w 1.
# Beside it: the paper's 128 steps and the same 64 steps in bf16 (the fast-sampler question, issue 8 §4).
RUN_SAMPLERS = (
    *(Sampler(w=w, steps=64) for w in (1.0, 0.0, 0.5, 2.0)),
    Sampler(steps=128),
    Sampler(steps=64, precision="bf16"),
)
COMBOS: list[Candidate] = [
    _c(
        "default",
        "the default run: 256x3, 5K steps, batches 80% online, FiLM, 64 steps (w sweep for cfdg)",
        variants=ALL_VARIANTS,
        online_share=0.8,
        film=True,
        samplers=RUN_SAMPLERS,
        sweep_round=1,
    ),
    _c(
        "default_input",
        "synther with SynthER's input conditioning (no FiLM), 64 steps",
        variants=("synther",),
        samplers=RUN_SAMPLERS[:1],
    ),
    _c(
        "q_best",
        "quality: 512x4, 20K steps, batches 80% online, FiLM",
        fit={"width": 512, "depth": 4, "train_steps": 20000},
        online_share=0.8,
        film=True,
        samplers=(Sampler(w=0.5),),
    ),
    _c("oh_w", "batches 80% online rows, w 0 / 0.5 / 1", online_share=0.8, samplers=W_SMALL),
    _c("oh_film", "batches 80% online rows + FiLM", online_share=0.8, film=True, samplers=W_SMALL),
    _c(
        "oh_rownorm",
        "batches 80% online rows, normaliser of offline ∪ online as stored",
        online_share=0.8,
        norm="rows",
        samplers=W_SMALL,
    ),
    _c("norm_online", "uniform batches, normaliser of the online rows", norm="online", samplers=W_SMALL),
    _c(
        "q_512x4_20k",
        "quality: denoiser 512x4, 20K steps",
        variants=("cfdg", "synther"),
        fit={"width": 512, "depth": 4, "train_steps": 20000},
    ),
    _c(
        "q_1024x6_20k",
        "quality: paper-width denoiser 1024x6, 20K steps",
        variants=("cfdg", "synther"),
        fit={"width": 1024, "depth": 6, "train_steps": 20000},
    ),
]


# ---------------------------------------------------------------- fitting


def fit_one(cand: Candidate, variant: str, data: RoundData, k: int, seed: int, prev: Any | None) -> tuple[Any, dict]:
    """Fit round k's model for `variant` with the candidate's changes; returns (model, fit metrics)."""
    from cfdg.config import from_mapping
    from cfdg.diffusion.config import DiffusionConfig
    from cfdg.diffusion.normaliser import Normaliser, to_vectors
    from cfdg.diffusion.variants.registry import get_variant
    from cfdg.store import Transitions

    overrides = BASE | dict(cand.fit)
    if cand.steps_growth:
        overrides["train_steps"] = overrides["train_steps"] * k
    overrides["train_steps"] = max(1, int(overrides["train_steps"] * STEPS_SCALE))
    overrides["variant"] = variant
    if cand.film:
        overrides["conditioning"] = "film"
    if cand.online_share is not None and variant in ("cfdg", "joint"):
        overrides["fit_online_fraction"] = cand.online_share
    cfg = from_mapping(DiffusionConfig, overrides, f"candidate {cand.name}")
    generator = get_variant(variant)
    offline, online = data.offline, data.online[k - 1]
    if "offline" not in generator.trains_on:
        offline = None
    # Warm start: round k trains round k-1's network itself (same steps, fresh optimiser and EMA).
    net = copy.deepcopy(prev.net) if cand.warm_start and prev is not None else None
    normaliser = None
    if cand.norm != "data":
        union = online if offline is None else Transitions.concat([offline, online])
        normaliser = Normaliser.fit(to_vectors(online if cand.norm == "online" else union))
    return generator.fit(offline, online, cfg, seed=seed * 1000 + k, progress=False, net=net, normaliser=normaliser)


def draw(model: Any, n: int, seed: int, s: Sampler, batch: int = 4096) -> Any:
    """n online-labelled samples, chunked and seeded per chunk as materialise does (the library's sampler)."""
    from cfdg.diffusion.config import SamplingConfig
    from cfdg.diffusion.sample import sample
    from cfdg.diffusion.variants.registry import get_variant

    sampling = SamplingConfig(
        guidance_w=s.w, solver=s.solver, steps=s.steps, stochastic=s.stochastic, precision=s.precision, batch=batch
    )
    return sample(model, get_variant(model.cfg.variant), n, 1, seed, sampling)


# ---------------------------------------------------------------- measures


def js_parts(reference: Any, candidate: Any, seed: int) -> dict[str, float]:
    """cfdg.quality's classifier JS for states and transitions only (the ablation's measures), same subsampling."""
    from cfdg.quality import classifier_js, part_arrays

    rng = np.random.default_rng(seed)
    n = min(len(reference), len(candidate), JS_ROWS)
    ref = part_arrays(reference.take(np.sort(rng.choice(len(reference), n, replace=False))))
    cand = part_arrays(candidate.take(np.sort(rng.choice(len(candidate), n, replace=False))))
    out = {}
    for part in ("state", "transition"):
        a, b = ref[part][rng.permutation(n)], cand[part][rng.permutation(n)]
        out[part] = classifier_js(a, b, seed)
    return out


def measure(gen: Any, data: RoundData, k: int, seed: int, memorisation: bool = True) -> dict[str, Any]:
    """Fidelity, alignment (round data and fresh rows) and memorisation of one set of online-labelled rows."""
    from cfdg.fidelity import simulator_fidelity
    from cfdg.quality import memorisation_ratio

    online, fresh = data.online[k - 1], data.fresh[k - 1]
    fid = simulator_fidelity(gen, ENV, max_rows=FIDELITY_ROWS, seed=seed)
    js = js_parts(online, gen, seed)
    out = {
        "next_state_rel_error": fid["next_state_rel_error"],
        "reward_rel_error": fid["reward_rel_error"],
        "termination_agreement": fid["termination_agreement"],
        "share_checked": fid["share_checked"],
        "js_state": js["state"],
        "js_transition": js["transition"],
    }
    if fresh is not None:
        jf = js_parts(fresh, gen, seed)
        out |= {"js_state_fresh": jf["state"], "js_transition_fresh": jf["transition"]}
    if memorisation:
        # Against the round's online rows (what online-labelled samples could copy) for every variant,
        # so all are measured in the same units; reference = leave-one-episode-out real rows.
        out["memorisation"] = memorisation_ratio(gen, online, None, max_rows=FIDELITY_ROWS, seed=seed)["ratio"]
    return out


# ---------------------------------------------------------------- jobs


def run_job(args: tuple[str, str, int, str, str]) -> list[dict]:
    """One (candidate, variant, seed): rounds 1..N in order (warm start needs the previous round)."""
    name, variant, seed, data_path, out_path = args
    import torch

    torch.set_num_threads(1)

    cand = candidate(name)
    data = load(Path(data_path))
    done = set()  # (candidate, variant, seed, round, sampler) already in the output: a rerun resumes
    if Path(out_path).exists():
        for line in Path(out_path).read_text().splitlines():
            r = json.loads(line)
            done.add((r["candidate"], r["variant"], r["seed"], r["round"], r.get("sampler")))
    prev = None
    records = []
    for k in range(1, len(data.online) + 1):
        if cand.rounds is not None and k not in cand.rounds and not cand.warm_start:
            continue
        samplers = [
            s
            for s in cand.samplers
            if not (variant != "cfdg" and s.w != DEFAULT_SAMPLER.w and s.solver == "heun" and s.steps in (32, 64))
        ]  # guidance sweep: only the conditional model has a guidance weight
        if cand.sweep_round is not None and (k != cand.sweep_round or variant != "cfdg"):
            samplers = samplers[:1]
        samplers = [s for s in samplers if (name, variant, seed, k, s.tag) not in done]
        if not samplers and not cand.warm_start:
            continue  # measured by an earlier run into the same output
        t0 = time.perf_counter()
        model, fit_metrics = fit_one(cand, variant, data, k, seed, prev)
        fit_s = time.perf_counter() - t0
        for s in samplers:
            t1 = time.perf_counter()
            gen = draw(model, N_GEN, seed * 7919 + k, s)
            sample_s = time.perf_counter() - t1
            rec = {
                "candidate": name,
                "variant": variant,
                "seed": seed,
                "round": k,
                "sampler": s.tag,
                "w": s.w,
                "solver": s.solver,
                "steps": s.steps,
                "stochastic": s.stochastic,
                "nfe": s.nfe,
                "precision": s.precision,
                "train_steps": model.cfg.train_steps,
                "width": model.cfg.width,
                "depth": model.cfg.depth,
                "final_loss": fit_metrics["final_loss"],
                "fit_s": fit_s,
                "sample_s": sample_s,
                "device": fit_metrics["device"],
                **measure(gen, data, k, seed),
            }
            records.append(rec)
            with open(out_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        prev = model
    return records


def reference_records(data: RoundData, seeds: int) -> list[dict]:
    """The offline data and the real round data measured as the samples are (seed = subsample seed)."""
    recs = []
    for k in range(1, len(data.online) + 1):
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            off = data.offline.take(np.sort(rng.choice(len(data.offline), N_GEN, replace=False)))
            recs.append(
                {
                    "candidate": "reference",
                    "variant": "offline",
                    "seed": seed,
                    "round": k,
                    **measure(off, data, k, seed, memorisation=False),
                }
            )
            if data.fresh[k - 1] is not None:
                real = data.online[k - 1]
                jf = js_parts(data.fresh[k - 1], real, seed)
                recs.append(
                    {
                        "candidate": "reference",
                        "variant": "real",
                        "seed": seed,
                        "round": k,
                        "js_state_fresh": jf["state"],
                        "js_transition_fresh": jf["transition"],
                    }
                )
    return recs


def run(
    data_path: Path,
    out: Path,
    names: list[str],
    variants: list[str] | None,
    seeds: int,
    workers: int,
    deadline: float,
    references: bool,
) -> None:
    jobs = []
    for name in names:
        cand = candidate(name)
        for v in cand.variants:
            if variants and v not in variants:
                continue
            for seed in range(seeds):
                jobs.append((name, v, seed, str(data_path), str(out)))
    print(f"{len(jobs)} jobs on {workers} workers, deadline {deadline:.0f} s", flush=True)
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        pending = [pool.apply_async(run_job, (j,)) for j in jobs]
        if references:
            refs = reference_records(load(data_path), seeds)
            with open(out, "a") as f:
                for r in refs:
                    f.write(json.dumps(r) + "\n")
        for job, p in zip(jobs, pending, strict=True):
            left = deadline - (time.perf_counter() - start)
            try:
                p.get(timeout=max(left, 1.0))
                print(f"done {job[:3]} at {time.perf_counter() - start:.0f} s", flush=True)
            except mp.TimeoutError:
                print(f"deadline: stopping with {job[:3]} unfinished", flush=True)
                pool.terminate()
                break
            except Exception as e:
                print(f"FAILED {job[:3]}: {type(e).__name__}: {e}", flush=True)


# ---------------------------------------------------------------- tables

METRICS = [
    ("next_state_rel_error", "next-state rel. err"),
    ("reward_rel_error", "reward rel. err"),
    ("js_state", "state JS (round)"),
    ("js_state_fresh", "state JS (fresh)"),
    ("js_transition", "trans. JS (round)"),
    ("js_transition_fresh", "trans. JS (fresh)"),
    ("memorisation", "memorisation"),
]


def read_records(paths: list[Path]) -> list[dict]:
    recs = []
    for p in paths:
        with open(p) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    # a record measured twice (a rerun) counts once: the last one read
    keyed = {(r["candidate"], r["variant"], r["seed"], r["round"], r.get("sampler", "")): r for r in recs}
    return list(keyed.values())


def _fmt(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "–"
    m = float(np.mean(xs))
    s = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
    return f"{m:.3f} ± {s:.3f}" if len(xs) > 1 else f"{m:.3f}"


def summarise(recs: list[dict], sampler: str = DEFAULT_SAMPLER.tag) -> list[dict]:
    """Mean ± std over seeds per (candidate, variant, round, sampler)."""
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        if r["candidate"] != "reference" and r.get("sampler") != sampler:
            continue
        groups.setdefault((r["candidate"], r["variant"], r["round"]), []).append(r)
    rows = []
    for (c, v, k), rs in groups.items():
        row: dict[str, Any] = {"candidate": c, "variant": v, "round": k, "n_seeds": len(rs)}
        for key, _ in [*METRICS, ("fit_s", "")]:
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                row[key] = {
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                    "values": vals,
                }
        rows.append(row)
    return rows


def markdown(recs: list[dict]) -> str:
    """Mean ± std over seeds per (round, candidate, variant, sampler); the solver curves are sampler_curves.py's."""
    groups: dict[tuple, list[dict]] = {}
    curve_names = {c.name for c in CURVES}
    for r in recs:
        if r["candidate"] in curve_names:
            continue
        groups.setdefault((r["candidate"], r["variant"], r["round"], r.get("sampler", "")), []).append(r)
    order = {c.name: i for i, c in enumerate(CANDIDATES + COMBOS + CURVES)} | {"reference": -1}
    vorder = {"offline": 0, "real": 1, "cfdg": 2, "synther": 3, "joint": 4}
    head = "| round | candidate | variant | sampler | seeds | " + " | ".join(h for _, h in METRICS) + " |"
    lines = [head, "|" + "---|" * (5 + len(METRICS))]
    for key in sorted(groups, key=lambda g: (g[2], order.get(g[0], 99), vorder.get(g[1], 9), g[3])):
        rs = groups[key]
        cells = [_fmt([r.get(m) for r in rs]) for m, _ in METRICS]
        lines.append(f"| {key[2]} | {key[0]} | {key[1]} | {key[3]} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SYNTHER_AT_EQUAL_COMPUTE = {"q_best": "q_512x4_20k"}  # else the baseline's synther (same size and steps)
TARGETS = [
    ("ns≤synther", "next_state_rel_error", "synther", "le"),
    ("JS≤synther", "js_state", "synther", "le"),
    ("JSfresh≤synther", "js_state_fresh", "synther", "le"),
    ("memo≥synther−std", "memorisation", "synther", "ge_std"),
    ("JS<offline", "js_state", "offline", "lt"),
    ("JSfresh<offline", "js_state_fresh", "offline", "lt"),
    ("ns≤0.10", "next_state_rel_error", None, "abs"),
]


def targets(recs: list[dict], sampler: str = DEFAULT_SAMPLER.tag) -> str:
    """Issue 8 §3's targets for each CFDG candidate and round, on means over seeds.

    The synther reference is the same candidate's synther model where it was fitted (equal compute),
    else the baseline synther; the offline reference is the offline data measured the same way.
    """
    measured = {(r["candidate"], r.get("sampler")) for r in recs}
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        c = r["candidate"]
        use = sampler if (c, sampler) in measured or c not in {x.name for x in COMBOS} else candidate(c).samplers[0].tag
        if c == "reference" or r.get("sampler") == use:
            groups.setdefault((c, r["variant"], r["round"]), []).append(r)

    def stat(key: tuple, m: str) -> tuple[float, float] | None:
        vals = [r[m] for r in groups.get(key, []) if r.get(m) is not None]
        if not vals:
            return None
        return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

    lines = ["| candidate | round | " + " | ".join(t[0] for t in TARGETS) + " |", "|" + "---|" * (2 + len(TARGETS))]
    cands = sorted(
        {c for c, v, _ in groups if v == "cfdg"},
        key=lambda c: (
            [x.name for x in CANDIDATES + COMBOS + CURVES].index(c)
            if c in [x.name for x in CANDIDATES + COMBOS + CURVES]
            else 99
        ),
    )
    for c in cands:
        for k in sorted({k for cc, v, k in groups if cc == c and v == "cfdg"}):
            cells = []
            for _, m, ref, how in TARGETS:
                mine = stat((c, "cfdg", k), m)
                if ref == "synther":
                    other = stat((c, "synther", k), m) or stat(
                        (SYNTHER_AT_EQUAL_COMPUTE.get(c, "baseline"), "synther", k), m
                    )
                elif ref == "offline":
                    other = stat(("reference", "offline", k), m)
                else:
                    other = (0.10, 0.0)
                if mine is None or other is None:
                    cells.append("–")
                    continue
                ok = {
                    "le": mine[0] <= other[0],
                    "lt": mine[0] < other[0],
                    "abs": mine[0] <= other[0],
                    "ge_std": mine[0] >= other[0] - other[1],
                }[how]
                cells.append(f"{'✓' if ok else '✗'} {mine[0]:.3f}/{other[0]:.3f}")
            lines.append(f"| {c} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    e.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    r.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    r.add_argument("--variants", default="", help="comma-separated variants (default: each candidate's)")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    r.add_argument("--deadline", type=float, default=3600.0, help="seconds; unfinished jobs are dropped")
    r.add_argument("--no-references", action="store_true")
    t = sub.add_parser("table")
    t.add_argument("results", type=Path, nargs="+")
    t.add_argument("--md", type=Path)
    t.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "export":
        export(a.artifacts, a.out)
    elif a.cmd == "run":
        names = [n for n in a.only.split(",") if n] or [c.name for c in CANDIDATES]
        variants = [v for v in a.variants.split(",") if v] or None
        run(a.data, a.out, names, variants, a.seeds, a.workers, a.deadline, not a.no_references)
    else:
        recs = read_records(a.results)
        md = markdown(recs) + "\nTargets (CFDG mean / reference mean):\n\n" + targets(recs)
        print(md)
        if a.md:
            a.md.parent.mkdir(parents=True, exist_ok=True)
            a.md.write_text(md)
        if a.json:
            a.json.write_text(json.dumps({"rows": summarise(recs), "records": recs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
