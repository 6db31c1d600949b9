"""Tiny SD3-, Flux- and DiT-style transformers as velocity models (App. G): built offline from
seeds, each wrapper's v equal to calling the diffusers model directly as its pipeline does (the
call written out here), guidance by the one rule, the fine-tune's relative size, Flux's packing
and resolution shift against diffusers' own, one-line errors."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from amdm_geom.core.flow_schedules import make_flow_scheduler
from amdm_geom.models.constants import TRANSFORMER_KINDS as KINDS
from amdm_geom.models.transformers import (
    DiTFlowDenoiser,
    FluxFlowDenoiser,
    SD3FlowDenoiser,
    flow_denoiser,
    make_tiny_transformer,
    pack_latents,
    perturbed,
    text_condition,
    tiny_transformer_config,
    tiny_transformer_pair,
    unpack_latents,
)
from amdm_geom.models.unet import make_tiny_unet

T = torch.tensor(687.5)  # a scheduler timestep s * 1000 (float32, 0-d)


def _latents(model, batch=3, seed=5):
    return torch.randn(batch, *model.latent_shape, generator=torch.Generator().manual_seed(seed))


def _cond(kind, base, seed=1):
    return torch.tensor([3]) if kind == "dit" else text_condition(base, seed)


def _direct(kind, base, z, cond, embedded_guidance=3.5):
    """The transformer called as its diffusers pipeline calls it, with nothing of the wrapper."""
    B = z.shape[0]
    with torch.no_grad():
        if kind == "sd3":
            return base(hidden_states=z, timestep=T.expand(B), encoder_hidden_states=cond[0].repeat(B, 1, 1),
                        pooled_projections=cond[1].repeat(B, 1), return_dict=False)[0]
        if kind == "flux":
            _, C, H, W = z.shape
            tokens = FluxPipeline._pack_latents(z, B, C, H, W)
            img_ids = FluxPipeline._prepare_latent_image_ids(B, H // 2, W // 2, z.device, z.dtype)
            out = base(hidden_states=tokens, timestep=T.expand(B).to(z.dtype) / 1000,
                       guidance=torch.full([B], embedded_guidance), pooled_projections=cond[1].repeat(B, 1),
                       encoder_hidden_states=cond[0].repeat(B, 1, 1), txt_ids=torch.zeros(cond[0].shape[1], 3),
                       img_ids=img_ids, return_dict=False)[0]
            return FluxPipeline._unpack_latents(out, H * 8, W * 8, 8)
        out = base(z, timestep=T.expand(B), class_labels=cond.expand(B), return_dict=False)[0]
        assert out.shape[1] == 2 * z.shape[1]  # eps and a learned variance, as DiT
        return out[:, :z.shape[1]]


@pytest.mark.parametrize("kind", KINDS)
def test_the_wrapper_is_the_diffusers_call(kind):
    base = make_tiny_transformer(kind, seed=0)
    model = flow_denoiser(base)
    assert type(model) is {"sd3": SD3FlowDenoiser, "flux": FluxFlowDenoiser, "dit": DiTFlowDenoiser}[kind]
    z = _latents(model)
    v = model(z, T, _cond(kind, base))
    assert v.shape == z.shape == (3, 4, 8, 8) and v.dtype == torch.float32
    assert torch.isfinite(v).all() and float(v.std()) > 0.1
    assert torch.equal(v, _direct(kind, base, z, _cond(kind, base)))
    assert torch.equal(model(z, float(T), _cond(kind, base)), v)  # a Python float is the same timestep


@pytest.mark.parametrize("kind", KINDS)
def test_guidance_is_the_one_rule(kind):
    base = make_tiny_transformer(kind, seed=1)
    plain = flow_denoiser(base)
    uncond = plain.null_condition()
    guided = flow_denoiser(base, guidance_scale=4.0)
    z, y = _latents(plain), _cond(kind, base)
    v_c, v_u = plain(z, T, y), plain(z, T, uncond)
    torch.testing.assert_close(guided(z, T, y), v_u + 4.0 * (v_c - v_u), rtol=1e-5, atol=1e-5)
    assert torch.equal(flow_denoiser(base, guidance_scale=1.0)(z, T, y), v_c)  # no guidance at <= 1
    if kind == "dit":
        assert int(uncond) == base.config.num_embeds_ada_norm
    else:
        assert not uncond[0].any() and uncond[0].shape == (1, 8, 32) and uncond[1].shape == (1, 24)


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_construction_is_deterministic_and_leaves_the_global_rng(kind):
    state = torch.random.get_rng_state()
    a, b, c = (make_tiny_transformer(kind, seed=s) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    da, dc = flow_denoiser(a).describe(), flow_denoiser(c).describe()
    assert json.loads(json.dumps(da)) == da and da["weights_sha256"] != dc["weights_sha256"]
    assert da["family"] == "transformer-flow" and da["kind"] == kind and da["schedule"]["shift"] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_the_fine_tune_moves_each_weight_by_its_share_of_its_spread(kind):
    base = make_tiny_transformer(kind, seed=2)
    tuned = perturbed(base, 0.05, seed=3)
    ratios = []
    for p, q in zip(base.parameters(), tuned.parameters()):
        p, q = p.detach(), q.detach()
        if p.numel() >= 256 and float(p.std()) > 0:
            ratios.append(float((q - p).std() / p.std()))
    assert len(ratios) > 5 and all(0.04 < r < 0.06 for r in ratios), ratios
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), perturbed(base, 0.0, seed=3).parameters()))
    z = _latents(flow_denoiser(base))
    va, vb = flow_denoiser(base)(z, T, _cond(kind, base)), flow_denoiser(tuned)(z, T, _cond(kind, base))
    assert 0.005 < float((va - vb).norm() / va.norm()) < 0.5  # nearby, not equal


@pytest.mark.parametrize("kind", KINDS)
def test_the_pair_is_one_flow_ecosystem(kind):
    (m1, m2), (y1, y2) = tiny_transformer_pair(kind, seed=4, scale=0.02, shift=3.0, guidance_scale=2.0)
    assert m1.scheduler is m2.scheduler and m1.scheduler.config.shift == 3.0
    assert m1.condition_kind == m2.condition_kind and m1.latent_shape == m2.latent_shape
    assert m2.describe()["perturb"] == 0.02 and m1.describe()["perturb"] == 0.0
    z = _latents(m1)
    assert torch.isfinite(m1(z, T, y1)).all() and torch.isfinite(m2(z, T, y2)).all()
    if kind != "dit":
        d = (y2[0] - y1[0]).norm() / (y1[0].numel() ** 0.5)
        assert 0.05 < float(d) < 0.2  # cond_distance 0.1 per entry


def test_flux_packing_and_resolution_shift_are_diffusers():
    z = torch.randn(2, 4, 6, 10)
    tokens = pack_latents(z)
    assert torch.equal(tokens, FluxPipeline._pack_latents(z, 2, 4, 6, 10))
    assert torch.equal(unpack_latents(tokens, 6, 10), z)
    sched = make_flow_scheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=64,
                                base_shift=0.5, max_shift=1.15)
    model = FluxFlowDenoiser(make_tiny_transformer("flux"), sched, height=6, width=10)
    assert model.latent_shape == (4, 6, 10) and model.img_ids.shape == (15, 3)
    assert model.flow_mu == pytest.approx(calculate_shift(15, 4, 64, 0.5, 1.15), rel=1e-12)
    assert SD3FlowDenoiser(make_tiny_transformer("sd3")).flow_mu is None
    v = model(torch.randn(2, 4, 6, 10), T, text_condition(model.model, 0))
    assert v.shape == (2, 4, 6, 10) and torch.isfinite(v).all()


def test_per_sample_conditions_are_per_sample():
    base = make_tiny_transformer("sd3", seed=0)
    model = flow_denoiser(base)
    z = _latents(model, batch=2)
    y0, y1 = text_condition(base, 0), text_condition(base, 1)
    both = model(z, T, (torch.cat([y0[0], y1[0]]), torch.cat([y0[1], y1[1]])))
    torch.testing.assert_close(both[1:], model(z[1:], T, y1), rtol=1e-5, atol=1e-6)
    labels = flow_denoiser(make_tiny_transformer("dit"))
    out = labels(z, T, torch.tensor([1, 2]))
    torch.testing.assert_close(out[:1], labels(z[:1], T, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda: tiny_transformer_config("unet"), "kind must be one of sd3, flux, dit; got 'unet'"),
    (lambda: make_tiny_transformer("sd3", seed=-1), "seed must be a non-negative int; got -1"),
    (lambda: flow_denoiser(make_tiny_unet(sample_size=8, block_out_channels=(8, 16))),
     "model must be an SD3Transformer2DModel, FluxTransformer2DModel or DiTTransformer2DModel; "
     "got UNet2DConditionModel"),
    (lambda: flow_denoiser(make_tiny_transformer("sd3"), DDIMScheduler()),
     "must be a flow-matching scheduler.*got DDIMScheduler"),
    (lambda: flow_denoiser(make_tiny_transformer("dit"), guidance_scale=float("nan")), "guidance_scale must be"),
    (lambda: FluxFlowDenoiser(make_tiny_transformer("flux"), height=7), "height and width must be even ints >= 2"),
    (lambda: perturbed(make_tiny_transformer("dit"), -0.1, 0), "scale must be >= 0.0; got -0.1"),
])
def test_bad_construction_is_one_line(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind,cond,match", [
    ("sd3", lambda b: torch.zeros(1, 8, 32), r"cond must be a pair \(encoder_hidden_states .*got Tensor"),
    ("sd3", lambda b: (torch.zeros(1, 8, 31), torch.zeros(1, 24)), r"got shapes \(1, 8, 31\) and \(1, 24\)"),
    ("flux", lambda b: (torch.zeros(2, 8, 32), torch.zeros(1, 24)), r"with B = 3; got shapes \(2, 8, 32\)"),
    ("dit", lambda b: 11, r"cond must be class labels in \[0, 10\] \(10: unconditional\).*got 11"),
    ("dit", lambda b: torch.tensor([0.5]), "cond must be class labels"),
])
def test_bad_conditions_are_one_line(kind, cond, match):
    base = make_tiny_transformer(kind)
    model = flow_denoiser(base)
    with pytest.raises(ValueError, match=match) as info:
        model(_latents(model), T, cond(base))
    assert "\n" not in str(info.value)


def test_bad_latents_timesteps_and_guidance_shapes_are_one_line():
    base = make_tiny_transformer("sd3")
    model = flow_denoiser(base, guidance_scale=2.0)
    y = text_condition(base, 0, seq_len=5)
    for call, match in [
        (lambda: model(torch.zeros(2, 4, 8, 6), T, y), r"latents must have shape \(B, 4, 8, 8\); got \(2, 4, 8, 6\)"),
        (lambda: model(_latents(model), torch.tensor([1.0, 2.0]), y), r"t must be one timestep .*got shape \(2,\)"),
        (lambda: model(_latents(model), T, y), r"the condition's token count \(5\); got 8"),
    ]:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_the_pair_spec_builds_the_pair(kind):
    from amdm_geom.models.specs import TinyTransformerPairSpec

    (m1, m2), (y1, y2) = TinyTransformerPairSpec(kind=kind, sample_size=6, scale=0.02, model_seed=3).build()
    (w1, _), (z1, _) = tiny_transformer_pair(kind, seed=3, scale=0.02, sample_size=6)
    assert m1.latent_shape == m2.latent_shape == (4, 6, 6)
    z = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m1(z, T, y1), w1(z, T, z1))


def test_the_pair_spec_refuses_odd_sizes_and_unknown_kinds():
    from amdm_geom.models.specs import TinyTransformerPairSpec

    for kwargs, match in [({"sample_size": 7}, "sample_size must be an even int >= 2"), ({"kind": "unet"}, "kind")]:
        with pytest.raises(ValueError, match=match) as info:
            TinyTransformerPairSpec(**kwargs)
        assert "\n" not in str(info.value)
