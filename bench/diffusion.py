"""Benchmark of the CFDG diffusion model: training and sampling speed, FLOP utilisation, bf16 quality.

    python bench/diffusion.py [--json] [--quick]

For the paper size (width 1024, depth 6) and a CPU size (width 256, depth 3) at Hopper's data
width (11+3+1+11+1 = 27) it measures, in one run on one device:
- training steps/s at batch 256 (the library's fit_diffusion, first step included);
- sampling samples/s for 128 Heun steps with guidance (the library's sampler: both guidance
  evaluations in one batched call). Only a few sampler steps are run: their time per network
  call (fixed costs included) is extrapolated to 128 steps = 255 calls;
- the same for a straightforward eager implementation (fp32, no autocast, two unbatched
  network calls per step, per-row noise embedding) with the same weights, as the baseline;
- FLOP utilisation: analytic FLOPs (2·in·out per Linear per row; training = 3× forward) over
  the measured peak of a plain 4096² matmul of the same precision;
- JS divergence between bf16 and fp32 samples of a briefly trained model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cfdg.config import from_mapping
from cfdg.device import select_device
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
from cfdg.diffusion.denoiser import LABEL_NULL, count_flops_per_row
from cfdg.diffusion.edm import karras_sigmas, preconditioning
from cfdg.diffusion.sample import sample, sample_vectors
from cfdg.diffusion.variants.registry import get_variant
from cfdg.quality import js_divergences
from cfdg.store import Transitions

OBS, ACT = 11, 3  # Hopper
D = 2 * OBS + ACT + 2
DEVICE = select_device("auto")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CALLS_128 = 2 * 128 - 1  # Heun: two calls per step, one on the last
CFDG = get_variant("cfdg")  # every model here is the default variant's


def hopper_like(n: int, shift: float, seed: int) -> Transitions:
    """Stand-in transitions of Hopper's shape: a correlated Gaussian mixture (speed does not depend on data)."""
    rng = np.random.default_rng(seed)
    d = 2 * OBS + ACT + 1
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    comp = rng.integers(0, 3, size=(n, 1))
    v = shift + comp + rng.normal(size=(n, d)) @ mix
    return Transitions.from_arrays(
        {
            "observations": v[:, :OBS],
            "actions": np.tanh(v[:, OBS : OBS + ACT]),
            "rewards": v[:, OBS + ACT],
            "next_observations": v[:, OBS + ACT + 1 :],
            "terminals": rng.random(n) < 0.02,
            "timeouts": np.zeros(n, bool),
        }
    )


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, reps: int = 2) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = math.inf
    for _ in range(reps + 1):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


class Straightforward:
    """The same EDM maths written plainly: fp32, no autocast, cond and uncond as two network calls."""

    def __init__(self, net: nn.Module, sigma_data: float) -> None:
        self.net, self.sd = net, sigma_data

    def denoise(self, x: torch.Tensor, sigma: float, labels: torch.Tensor) -> torch.Tensor:
        s = torch.full((x.shape[0], 1), sigma, device=x.device)
        c_skip, c_out, c_in, c_noise = preconditioning(s, self.sd)
        return c_skip * x + c_out * self.net(c_in * x, c_noise.reshape(-1), labels)

    def sample(self, labels: torch.Tensor, steps: int, w: float, gen: torch.Generator) -> torch.Tensor:
        sigmas = karras_sigmas(steps, 0.002, 80.0, 7.0)
        gamma_max = min(80.0 / steps, math.sqrt(2) - 1)
        null = torch.full_like(labels, LABEL_NULL)
        dev = labels.device

        def guided(x: torch.Tensor, s: float) -> torch.Tensor:
            cond = self.denoise(x, s, labels)
            uncond = self.denoise(x, s, null)
            return (1 + w) * cond - w * uncond

        x = torch.randn(labels.shape[0], D, generator=gen).to(dev) * sigmas[0]
        with torch.no_grad():
            for i in range(steps):
                t, t_next = sigmas[i], sigmas[i + 1]
                gamma = gamma_max if 0.05 <= t <= 50 else 0.0
                t_hat = t * (1 + gamma)
                x = x + math.sqrt(t_hat**2 - t**2) * 1.003 * torch.randn(x.shape, generator=gen).to(dev)
                d = (x - guided(x, t_hat)) / t_hat
                x_next = x + (t_next - t_hat) * d
                if t_next > 0:
                    x_next = x + (t_next - t_hat) * 0.5 * (d + (x_next - guided(x_next, t_next)) / t_next)
                x = x_next
        return x


def per_call_seconds(run, device: torch.device, k: int, reps: int = 3) -> float:
    """Seconds per network call: a k-step sampler run (2k−1 calls) divided by its calls.

    The run's fixed costs (initial noise, denormalisation) are charged to the calls, which
    overstates the per-call time a little: the extrapolation errs on the slow side. Best of
    `reps` after a warm-up: on a shared machine the minimum is the least disturbed run.
    """
    run(k)
    return min(timed(lambda: run(k), device) for _ in range(reps)) / (2 * k - 1)


def bench_size(width: int, depth: int, batch: int, k: int, train_steps: int) -> list[dict]:
    """Rows for one network size. The sampling measurement follows a matmul peak of its precision
    (the machine may be shared; utilisation is against a peak measured under the same load)."""
    data_off, data_on = hopper_like(4096, 0.0, 1), hopper_like(4096, 1.0, 2)
    rows = []
    flops_row = count_flops_per_row(D, width, depth)
    base_cfg = {"width": width, "depth": depth}
    emb_flops = 2 * ((2 * 16 + 1) * 256 + 256 * width)  # noise MLP: per row in training only
    train_flops_step = 3 * 256 * (flops_row + emb_flops)
    sample_flops = batch * CALLS_128 * 2 * flops_row  # guidance: 2 rows per call per sample
    labels = (np.arange(batch) % 5 != 0).astype(np.uint8)  # 80% online, 20% offline
    model = None
    for precision in ("fp32", "bf16"):
        cfg = from_mapping(DiffusionConfig, {**base_cfg, "precision": precision, "train_steps": train_steps}, "bench")
        log(f"{width}x{depth} {precision}: train {train_steps} steps")
        model, m = CFDG.fit(data_off, data_on, cfg, seed=0, progress=False)

        def run(steps: int, model=model, precision=precision) -> None:
            sampling = SamplingConfig(guidance_w=1.0, steps=steps, batch=batch, precision=precision)
            sample_vectors(model, CFDG.denoiser(model, labels, batch, sampling), batch, 0, sampling)

        log(f"{width}x{depth} {precision}: matmul peak, then sampler steps {k}")
        peak = matmul_peak(DEVICE, DTYPES[precision])
        seconds_128 = CALLS_128 * per_call_seconds(run, model.device, k)
        rows.append(
            {
                "size": f"{width}x{depth}",
                "precision": precision,
                "train_steps_per_s": m["steps_per_s"],
                "train_gflops": m["steps_per_s"] * train_flops_step / 1e9,
                "train_mfu": m["steps_per_s"] * train_flops_step / peak,
                "samples_per_s": batch / seconds_128,
                "sample_gflops": sample_flops / seconds_128 / 1e9,
                "sample_mfu": sample_flops / seconds_128 / peak,
                "matmul_peak_gflops": peak / 1e9,
                "sample_batch": batch,
                "train_steps_measured": train_steps,
            }
        )
    # Baseline with the same (last trained) weights, fp32, no autocast, two calls per step.
    plain = Straightforward(model.ema, model.cfg.sigma_data)
    labels_t = torch.from_numpy(labels.astype(np.int64)).to(model.device)

    def run_plain(steps: int) -> None:
        plain.sample(labels_t, steps, 1.0, torch.Generator().manual_seed(0))

    log(f"{width}x{depth} straightforward fp32 baseline: sampler steps {k}")
    base = batch / (CALLS_128 * per_call_seconds(run_plain, model.device, k))
    for r in rows:
        r["straightforward_fp32_samples_per_s"] = base
        r["speedup_vs_straightforward"] = r["samples_per_s"] / base
    return rows


def bf16_quality(train_steps: int, n: int, steps: int) -> dict:
    """JS between bf16 and fp32 samples (same model, same seed), and of each to the real online data.

    Not a speed measurement: runs on one thread, where a small network is fastest on a busy machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    log(f"bf16 quality: train 256x3 for {train_steps} steps, sample {n} rows in fp32 and bf16")
    try:
        return _bf16_quality(train_steps, n, steps)
    finally:
        torch.set_num_threads(threads)


def _bf16_quality(train_steps: int, n: int, steps: int) -> dict:
    online = hopper_like(8000, 1.0, 2)
    cfg = from_mapping(
        DiffusionConfig,
        {"width": 256, "depth": 3, "train_steps": train_steps},
        "bench",
    )
    model, _ = CFDG.fit(hopper_like(8000, 0.0, 1), online, cfg, seed=0, progress=False)
    sampling = SamplingConfig(steps=steps, batch=n)
    fp32 = sample(model, CFDG, n, 1, 1, sampling)
    bf16 = sample(model, CFDG, n, 1, 1, dataclasses.replace(sampling, precision="bf16"))
    return {
        "bf16_vs_fp32": js_divergences(fp32, bf16, seed=0),
        "fp32_vs_real_online": js_divergences(online, fp32, seed=0),
        "bf16_vs_real_online": js_divergences(online, bf16, seed=0),
        "n": n,
        "train_steps": train_steps,
        "sample_steps": steps,
    }


def fast_sampler_speed(preset: Path, batch: int = 4096, reps: int = 2) -> dict:
    """samples/s of the preset's sampler against the 128-step guided stochastic fp32 sampler, same model.

    Both run end to end (no extrapolation) at the default denoiser size (256x3) on one sampler batch;
    best of `reps` after a warm-up. Equal fidelity is experiments/sampler_curves.py's business; this is the speed.
    """
    import yaml

    spec = (yaml.safe_load(preset.read_text()) or {}).get("sampling", {})
    keys = ("guidance_w", "solver", "steps", "stochastic", "precision")
    fast = from_mapping(SamplingConfig, {**{k: spec[k] for k in keys if k in spec}, "batch": batch}, str(preset))
    ref = SamplingConfig(guidance_w=fast.guidance_w, steps=128, batch=batch)
    cfg = from_mapping(DiffusionConfig, {"width": 256, "depth": 3, "train_steps": 30}, "bench")
    log(f"fast sampler: {sampler_tag(fast)} vs {sampler_tag(ref)}, 256x3, batch {batch}")
    model, _ = CFDG.fit(hopper_like(4096, 0.0, 1), hopper_like(4096, 1.0, 2), cfg, seed=0, progress=False)
    out = {"preset": str(preset), "batch": batch, "device": str(model.device)}
    for name, s in (("reference", ref), ("fast", fast)):
        sample(model, CFDG, batch, 1, 0, s)
        sec = min(timed(lambda s=s: sample(model, CFDG, batch, 1, 0, s), model.device) for _ in range(reps))
        out[name] = {"sampler": sampler_tag(s), "network_calls": network_calls(s), "samples_per_s": batch / sec}
    out["speedup"] = out["fast"]["samples_per_s"] / out["reference"]["samples_per_s"]
    return out


def network_calls(s: SamplingConfig) -> int:
    """Network calls per sample (each of 2 rows when guided): DPM-Solver++(2M) one per step, Heun 2N−1."""
    return s.steps if s.solver == "dpmpp2m" else 2 * s.steps - 1


def sampler_tag(s: SamplingConfig) -> str:
    """The sampler as the results name it, e.g. heun-sde/128/w1 or dpm++2m/16/w1/bf16."""
    kind = "dpm++2m" if s.solver == "dpmpp2m" else ("heun-sde" if s.stochastic else "heun-ode")
    return f"{kind}/{s.steps}/w{s.guidance_w:g}" + ("/bf16" if s.precision == "bf16" else "")


def table(result: dict) -> str:
    lines = [
        f"device: {result['device']}, torch {result['torch']}, threads {result['threads']}, "
        f"bench {result['seconds']:.0f} s",
        "| size | prec | matmul peak GFLOP/s | train steps/s (batch 256) | train GFLOP/s (MFU) "
        "| samples/s (128 Heun, w=1) | sampling GFLOP/s (MFU) | vs straightforward fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['size']} | {r['precision']} | {r['matmul_peak_gflops']:.0f} "
            f"| {r['train_steps_per_s']:.2f} | {r['train_gflops']:.0f} ({r['train_mfu']:.0%}) "
            f"| {r['samples_per_s']:.2f} | {r['sample_gflops']:.0f} ({r['sample_mfu']:.0%}) "
            f"| {r['speedup_vs_straightforward']:.2f}× (baseline {r['straightforward_fp32_samples_per_s']:.2f}/s) |"
        )
    q = result["bf16_quality"]
    lines.append(
        f"bf16 vs fp32 samples (width 256x3, {q['train_steps']} training steps, {q['n']} samples, "
        f"{q['sample_steps']} Heun steps), JS nats classifier / histogram:"
    )
    for name in ("bf16_vs_fp32", "fp32_vs_real_online", "bf16_vs_real_online"):
        parts = ", ".join(f"{k} {v['classifier']:.3f}/{v['histogram']:.3f}" for k, v in q[name].items())
        lines.append(f"  {name}: {parts}")
    lines.append(
        "Notes: samples/s are EXTRAPOLATED to 128 steps (255 network calls) from the time per call of "
        f"runs of {result['sampler_steps_measured']} sampler steps (best of 3, fixed costs charged to the "
        "calls); train steps/s include the "
        "first step. MFU = analytic FLOPs (2·in·out per Linear per row, training 3× forward) over a "
        "4096² matmul peak of the same precision measured just before sampling, under the same load. "
        "Baseline: same weights and batch, fp32, two unbatched calls per step."
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON instead of the table")
    ap.add_argument("--quick", action="store_true", help="small batches and few steps (a smoke test)")
    ap.add_argument(
        "--fast-sampler",
        type=Path,
        metavar="PRESET",
        help="only compare the preset's sampler (e.g. configs/fast-sampler.yaml) with 128 guided Heun steps",
    )
    args = ap.parse_args()
    start = time.perf_counter()
    if args.fast_sampler:
        r = fast_sampler_speed(args.fast_sampler)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(
                f"device {r['device']}, 256x3, batch {r['batch']}: {r['fast']['sampler']} "
                f"({r['fast']['network_calls']} calls) {r['fast']['samples_per_s']:.0f} samples/s vs "
                f"{r['reference']['sampler']} ({r['reference']['network_calls']} calls, fp32) "
                f"{r['reference']['samples_per_s']:.0f} samples/s: {r['speedup']:.1f}x"
            )
        return 0
    if args.quick:
        sizes = [(1024, 6, 256, 2, 3), (256, 3, 512, 3, 5)]
        quality = bf16_quality(200, 1000, 16)
    else:
        sizes = [(1024, 6, 2048, 2, 8), (256, 3, 4096, 4, 30)]
        quality = bf16_quality(800, 2000, 64)
    rows = []
    for width, depth, batch, k, train_steps in sizes:
        rows += bench_size(width, depth, batch, k, train_steps)
    result = {
        "device": str(DEVICE),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "bf16_quality": quality,
        "sampler_steps_measured": {f"{w}x{d}": k for w, d, _, k, _ in sizes},
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
