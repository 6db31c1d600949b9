"""Sampler speed on the exact family: CPU time per sample and step, beside a bare float32 loop.

    .venv/bin/python tests/benchmarks/bench_sampler.py            # B = 256 (issue 12's setting)
    .venv/bin/python tests/benchmarks/bench_sampler.py --quick    # B = 32, a fast check

Setting (issue 12, point 4): the default fine-grained family at n = 16384 (latent 4x64x64),
T = 50 DDIM steps, two models (position 0, colour 0), aggregated by slerp with the radial
shift for the first s = 20 steps (the paper's defaults), no recorder. The bare loop does the
same arithmetic in float32 torch with no checks: each model's exact eps by matrix products
against the (K, n) component terms, the DDIM update, slerp of the two latents and each
model's radial shift. Not part of the test suite.

Timings are CPU seconds of this process (``time.process_time``), with the torch thread count
set explicitly (``--threads``, default 1); sampler and bare loop runs are interleaved and each
keeps the best of ``--repeats`` (the machine's speed drifts). Target: sampler / bare <= 1.5.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from amdm_geom.models.gmm import fine_grained_family
from amdm_geom.sampling import AMDMSampler, SamplerConfig


def bare_loop(models, conds, batch: int, config: SamplerConfig, seed: int = 0) -> torch.Tensor:
    """The same arithmetic as the sampler in plain float32 torch: eps by matrix products, the
    DDIM update, slerp (eq. 6) and the radial shift (eq. 7) inside the window."""
    sched = models[0].scheduler
    sched.set_timesteps(config.num_inference_steps)
    acp = sched.alphas_cumprod.to(torch.float64)
    final = float(sched.final_alpha_cumprod)
    stride = sched.config.num_train_timesteps // config.num_inference_steps
    start, stop = config.window
    w, eta = config.weights[0], float(config.eta)
    n = models[0].mixture.dim
    terms = []
    for m, c in zip(models, conds):
        terms.append((m.mixture, torch.log(c).to(torch.float32)))
    g = torch.Generator().manual_seed(seed)
    z = [torch.randn(batch, n, generator=g) for _ in models]
    for k, t in enumerate(int(t) for t in sched.timesteps):
        a = float(acp[t])
        a_prev = float(acp[t - stride]) if t - stride >= 0 else final
        mus = []
        for zi, (mix, log_w) in zip(z, terms):
            v = a * mix.variances + (1 - a)  # per step, as the sampler's cache would
            inv_v = (1 / v).to(torch.float32)
            mean_t = (math.sqrt(a) * mix.means).to(torch.float32)
            m_inv = mean_t * inv_v
            const = ((mean_t * m_inv).sum(1) + torch.log(v).sum(1).to(torch.float32))
            quad = (zi * zi) @ inv_v.T - 2.0 * zi @ m_inv.T + const
            r = torch.softmax(log_w - 0.5 * quad, dim=1)
            eps = math.sqrt(1 - a) * (zi * (r @ inv_v) - r @ m_inv)
            x0 = (zi - math.sqrt(1 - a) * eps) / math.sqrt(a)
            mus.append(math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps)
        if start <= k < stop:
            za, zb = mus
            na, nb = za.norm(dim=1), zb.norm(dim=1)
            cos = ((za * zb).sum(1) / (na * nb)).clamp(-1, 1)
            phi = torch.acos(cos)
            s = torch.sin(phi)
            ca, cb = torch.sin((1 - w) * phi) / s, torch.sin(w * phi) / s
            agg = ca[:, None] * za + cb[:, None] * zb
            z = []
            for mu in mus:
                d = agg - mu
                z.append(agg - (eta / d.norm(dim=1))[:, None] * d)
        else:
            z = mus
    return z[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="B = 32 instead of 256")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batch = args.batch or (32 if args.quick else 256)
    fam = fine_grained_family()
    models = [fam.model(name="position"), fam.model(name="colour")]
    conds = [fam.condition(position=0), fam.condition(colour=0)]
    config = SamplerConfig()
    sampler = AMDMSampler(models, conds, config)
    seeds = list(range(batch))
    steps = config.num_inference_steps
    bare_loop(models, conds, 2, config)  # warm up both
    sampler.sample(seeds[:2])
    best = {"sampler": math.inf, "bare": math.inf}
    for _ in range(args.repeats):
        for name, fn in (("sampler", lambda: sampler.sample(seeds)),
                         ("bare", lambda: bare_loop(models, conds, batch, config))):
            t0 = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t0)
    per = {k: 1e3 * v / (batch * steps) for k, v in best.items()}
    print(f"exact family n = {fam.mixture.dim}, K = {fam.mixture.n_components}, B = {batch}, T = {steps}, "
          f"2 models, window {config.window}, torch threads {args.threads}, best of {args.repeats} (CPU time)")
    print(f"  sampler   {best['sampler']:8.3f} s   {per['sampler']:.4f} ms per sample and step")
    print(f"  bare f32  {best['bare']:8.3f} s   {per['bare']:.4f} ms per sample and step")
    ratio = best["sampler"] / best["bare"]
    print(f"  sampler / bare loop = {ratio:.2f}  (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
