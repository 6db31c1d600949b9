"""amdm_geom.models.unet against direct calls of the diffusers UNet, the CFG formula written
out by hand, parameter distances computed from the state dicts, and a save/load round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from amdm_geom.models.base import Denoiser, same_schedule
from amdm_geom.models.guidance import guided, uses_guidance
from amdm_geom.models.unet import (
    ConvAdapter,
    UNetDenoiser,
    condition_pair,
    make_condition,
    make_tiny_unet,
    perturbed_unet,
    tiny_unet_config,
    tiny_unet_family,
)

SMALL = {"sample_size": 16, "block_out_channels": (8, 16), "cross_attention_dim": 32}
TINY = {"sample_size": 8, "block_out_channels": (4, 8), "cross_attention_dim": 32}


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    return make_tiny_unet(seed=3, **SMALL)


@pytest.fixture
def z_t() -> torch.Tensor:
    return torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(11))  # (B, C, H, W)


def _direct(
    unet: UNet2DConditionModel, z: torch.Tensor, t: int, hidden: torch.Tensor
) -> torch.Tensor:
    """The UNet's own eps, called directly, one conditioning batch at a time."""
    with torch.no_grad():
        return unet(z, t, encoder_hidden_states=hidden).sample


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _params(model: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- classifier-free guidance -------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.5, 3.0, 7.5])
def test_cfg_matches_two_direct_passes(unet, z_t, scale):
    cond = make_condition(5)
    uncond = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(6))
    model = UNetDenoiser(unet, guidance_scale=scale, uncond=uncond)
    eps = model(z_t, 500, cond)
    eps_c = _direct(unet, z_t, 500, cond.expand(3, -1, -1))
    eps_u = _direct(unet, z_t, 500, uncond.expand(3, -1, -1))
    want = eps_u + scale * (eps_c - eps_u)
    assert eps.shape == (3, 4, 16, 16) and eps.dtype == torch.float32
    torch.testing.assert_close(eps, want, rtol=1e-5, atol=1e-5)
    # guidance really matters here: the two branches differ
    assert _rel(eps_c, eps_u) > 1e-3


def test_default_uncond_is_zeros(unet, z_t):
    cond = make_condition(5)
    eps = UNetDenoiser(unet, guidance_scale=4.0)(z_t, 200, cond)
    eps_c = _direct(unet, z_t, 200, cond.expand(3, -1, -1))
    eps_u = _direct(unet, z_t, 200, torch.zeros(3, 8, 32))
    torch.testing.assert_close(eps, eps_u + 4.0 * (eps_c - eps_u), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("scale", "expected"), [(0.0, False), (0.5, False), (1.0, False), (1.0 + 1e-9, True),
                                               (3.0, True)])
def test_uses_guidance_is_diffusers_rule(scale, expected):
    assert uses_guidance(scale) is expected


def test_guided_is_the_cfg_formula():
    rng = np.random.default_rng(0)
    eps_u, eps_c = rng.standard_normal((2, 4, 3))  # (B, n) each
    want = eps_u + 3.0 * (eps_c - eps_u)  # written out in numpy, float64
    got = guided(torch.from_numpy(eps_u), torch.from_numpy(eps_c), 3.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-15, atol=1e-15)
    assert not np.allclose(want, eps_c)  # the guidance term is not zero here


def _forward_batches(unet, call) -> tuple[list[int], torch.Tensor]:
    """The batch size of every UNet forward pass made by ``call()``, and its result."""
    calls = []
    handle = unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        out = call()
    finally:
        handle.remove()
    return calls, out


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0])
def test_no_guidance_at_or_below_one_is_one_conditional_pass(unet, z_t, scale):
    # diffusers' do_classifier_free_guidance is guidance_scale > 1: at s <= 1 the pipeline makes
    # one conditional call and uses eps_c as it is (s = 0.5 does not mean 0.5 eps_c + 0.5 eps_u)
    cond = make_condition(7)
    uncond = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(6))
    model = UNetDenoiser(unet, guidance_scale=scale, uncond=uncond)
    calls, eps = _forward_batches(unet, lambda: model(z_t, 999, cond))
    assert calls == [3]  # one forward, on the undoubled batch
    assert torch.equal(eps, _direct(unet, z_t, 999, cond.expand(3, -1, -1)))


def test_guidance_above_one_is_one_doubled_pass(unet, z_t):
    cond = make_condition(7)
    calls, _ = _forward_batches(unet, lambda: UNetDenoiser(unet, guidance_scale=1.01)(z_t, 999, cond))
    assert calls == [6]  # the doubled batch cat([z_t, z_t]), as StableDiffusionPipeline


def test_per_sample_conditions(unet, z_t):
    cond = torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(8))  # (B, seq, dim)
    eps = UNetDenoiser(unet, guidance_scale=2.0)(z_t, 300, cond)
    for i in range(3):
        eps_c = _direct(unet, z_t[i : i + 1], 300, cond[i : i + 1])
        eps_u = _direct(unet, z_t[i : i + 1], 300, torch.zeros(1, 8, 32))
        want = eps_u + 2.0 * (eps_c - eps_u)
        torch.testing.assert_close(eps[i : i + 1], want, rtol=1e-5, atol=1e-5)


def test_timestep_tensor_and_int_agree_and_matter(unet, z_t):
    model = UNetDenoiser(unet, guidance_scale=1.5)
    cond = make_condition(1)
    eps = model(z_t, 400, cond)
    assert torch.equal(eps, model(z_t, torch.tensor(400), cond))
    assert _rel(model(z_t, 50, cond), eps) > 1e-3


def test_float64_unet_returns_float64(z_t):
    unet64 = make_tiny_unet(seed=0, **TINY).double()
    model = UNetDenoiser(unet64, guidance_scale=2.0)
    z = z_t[:, :, :8, :8]
    eps = model(z, 10, make_condition(0))
    assert model.dtype == torch.float64 and eps.dtype == torch.float64
    want = _direct(unet64, z.double(), 10, make_condition(0).double().expand(3, -1, -1))
    want_u = _direct(unet64, z.double(), 10, torch.zeros(3, 8, 32, dtype=torch.float64))
    torch.testing.assert_close(eps, want_u + 2.0 * (want - want_u), rtol=1e-10, atol=1e-10)


def test_protocol_attributes(unet):
    model = UNetDenoiser(unet)
    assert isinstance(model, Denoiser)
    assert model.latent_shape == (4, 16, 16)
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    assert model.scheduler.config.beta_schedule == "scaled_linear"
    assert model.scheduler.config.beta_end == 0.012 and model.scheduler.config.steps_offset == 1


# -- construction and seeding -------------------------------------------------------------------


def test_seeded_construction_reproducible_and_rng_untouched():
    state = torch.random.get_rng_state()
    a, b, c = (make_tiny_unet(seed=s, **TINY) for s in (1, 1, 2))
    pert = perturbed_unet(a, 0.1, seed=4)
    cond = make_condition(3)
    y1, y2 = condition_pair(3, 0.2)
    ConvAdapter(4, seed=2, cond_dim=32)
    tiny_unet_family("adapter", sample_size=8, block_out_channels=(4, 8))
    assert torch.equal(torch.random.get_rng_state(), state)

    pa, pb, pc = _params(a), _params(b), _params(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["conv_in.weight"], pc["conv_in.weight"])
    assert torch.equal(_params(perturbed_unet(a, 0.1, seed=4))["conv_in.weight"],
                       _params(pert)["conv_in.weight"])
    assert torch.equal(cond, make_condition(3)) and not torch.equal(cond, make_condition(4))
    assert torch.equal(y1, cond)


def test_tiny_config_blocks_and_groups():
    config = tiny_unet_config(block_out_channels=(4, 8))
    # attention only below full resolution (as diffusers' own tiny test UNets)
    assert config["down_block_types"] == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert config["up_block_types"] == ("CrossAttnUpBlock2D", "UpBlock2D")
    assert 4 % config["norm_num_groups"] == 0 and 8 % config["norm_num_groups"] == 0
    assert tiny_unet_config()["norm_num_groups"] == 32
    with pytest.raises(ValueError) as excinfo:
        tiny_unet_config(block_out_channels=(8, 16), norm_num_groups=3)
    assert "norm_num_groups" in _one_line_error(excinfo)


# -- perturbed variant --------------------------------------------------------------------------


def test_perturbed_scale_zero_is_identical_and_base_untouched():
    base = make_tiny_unet(seed=0, **TINY)
    before = _params(base)
    same = perturbed_unet(base, 0.0, seed=9)
    moved = perturbed_unet(base, 0.3, seed=9)
    after, p0, p1 = _params(base), _params(same), _params(moved)
    assert all(torch.equal(before[k], after[k]) and torch.equal(before[k], p0[k]) for k in before)
    assert same is not base
    assert not torch.equal(p1["conv_in.weight"], before["conv_in.weight"])


@pytest.mark.parametrize("scale", [0.01, 0.1, 0.5])
def test_perturbed_parameter_distance_is_of_order_scale(scale):
    base = make_tiny_unet(seed=0, **SMALL)
    pb, pv = _params(base), _params(perturbed_unet(base, scale, seed=1))
    d2 = sum(float(((pv[k].double() - pb[k].double()) ** 2).sum()) for k in pb)
    n2 = sum(float((pb[k].double() ** 2).sum()) for k in pb)
    assert scale / 2 < math.sqrt(d2 / n2) < 2 * scale
    # a large weight tensor moves by N(0, (scale * std)^2) per entry
    w = pb["down_blocks.0.resnets.0.conv1.weight"].double()
    dw = pv["down_blocks.0.resnets.0.conv1.weight"].double() - w
    assert abs(float(dw.std()) / (scale * float(w.std())) - 1) < 0.15
    assert abs(float(dw.mean())) < 0.1 * scale * float(w.std())


def test_perturbed_eps_difference_grows_with_scale(unet, z_t):
    cond = make_condition(2)
    base = UNetDenoiser(unet, guidance_scale=3.0)
    eps = base(z_t, 600, cond)
    variants = [UNetDenoiser(perturbed_unet(unet, s, seed=5), guidance_scale=3.0)
                for s in (0.01, 0.1, 0.5)]
    diffs = [_rel(variant(z_t, 600, cond), eps) for variant in variants]
    assert 0 < diffs[0] < diffs[1] < diffs[2]


# -- adapter variant ----------------------------------------------------------------------------


class _Exploding(torch.nn.Module):
    def forward(self, *args):
        raise AssertionError("adapter called at adapter_scale 0")


def test_adapter_scale_zero_is_bit_identical_and_not_called(unet, z_t):
    cond = make_condition(0)
    base = UNetDenoiser(unet, guidance_scale=3.0)(z_t, 100, cond)
    with_zero = UNetDenoiser(unet, guidance_scale=3.0, adapter=_Exploding(), adapter_scale=0.0)
    assert torch.equal(with_zero(z_t, 100, cond), base)
    zero_conv = UNetDenoiser(unet, guidance_scale=3.0, adapter=ConvAdapter(4, cond_dim=32))
    assert torch.equal(zero_conv(z_t, 100, cond), base)


@pytest.mark.parametrize("scale", [0.05, 0.5])
def test_adapter_adds_scaled_adapter_output(unet, z_t, scale):
    cond = make_condition(0)
    adapter = ConvAdapter(4, hidden=16, seed=1, cond_dim=32)
    base = UNetDenoiser(unet, guidance_scale=3.0)(z_t, 700, cond)
    variant = UNetDenoiser(unet, guidance_scale=3.0, adapter=adapter, adapter_scale=scale)
    eps = variant(z_t, 700, cond)
    with torch.no_grad():
        delta = adapter(z_t, 700, cond)  # (B, C, H, W)
    assert delta.shape == z_t.shape and float(delta.abs().max()) > 1e-3
    torch.testing.assert_close(eps - base, scale * delta, rtol=1e-4, atol=1e-5)


def test_conv_adapter_depends_on_t_and_cond(z_t):
    adapter = ConvAdapter(4, seed=0, cond_dim=32)
    with torch.no_grad():
        a = adapter(z_t, 0, make_condition(0))
        # the time gain 0.5 + t/1000 is a pure factor: t=500 doubles t=0
        torch.testing.assert_close(adapter(z_t, 500, make_condition(0)), 2.0 * a)
        assert _rel(adapter(z_t, 0, make_condition(1)), a) > 1e-3


# -- errors -------------------------------------------------------------------------------------


def test_one_line_errors(unet, z_t):
    model = UNetDenoiser(unet, guidance_scale=2.0)
    cond = make_condition(0)
    bad = [
        (torch.randn(3, 4, 8, 8), 10, cond, "(3, 4, 8, 8)"),
        (torch.randn(4, 16, 16), 10, cond, "(4, 16, 16)"),
        (z_t, 10, torch.randn(1, 8, 16), "(1, 8, 16)"),
        (z_t, 10, torch.randn(8, 32), "(8, 32)"),
        (z_t, 10, torch.randn(2, 8, 32), "(2, 8, 32)"),
        (z_t, 1000, cond, "1000"),
        (z_t, 10.0, cond, "10.0"),
    ]
    for z, t, c, shown in bad:
        with pytest.raises(ValueError) as excinfo:
            model(z, t, c)
        assert shown in _one_line_error(excinfo)
    given = UNetDenoiser(unet, guidance_scale=2.0, uncond=torch.zeros(1, 8, 32))
    with pytest.raises(ValueError) as excinfo:
        given(z_t, 10, torch.randn(1, 5, 32))
    assert "(1, 5, 32)" in _one_line_error(excinfo)
    with pytest.raises(ValueError) as excinfo:
        UNetDenoiser(unet, uncond=torch.zeros(1, 8, 7))
    assert "(1, 8, 7)" in _one_line_error(excinfo)


def test_unknown_variant():
    with pytest.raises(ValueError) as excinfo:
        tiny_unet_family("lora", **TINY)
    message = _one_line_error(excinfo)
    assert "'lora'" in message
    assert all(v in message for v in ("perturbed", "adapter", "independent"))


# -- save / load, describe, families ------------------------------------------------------------


def test_save_load_round_trip(unet, z_t, tmp_path):
    unet.save_pretrained(tmp_path)
    # low_cpu_mem_usage=False: without accelerate, diffusers would log that it falls back to it
    loaded = UNet2DConditionModel.from_pretrained(tmp_path, low_cpu_mem_usage=False)
    assert loaded is not unet and list(loaded.config.block_out_channels) == [8, 16]
    cond = make_condition(4)
    eps = UNetDenoiser(unet, guidance_scale=3.0)(z_t, 250, cond)
    assert torch.equal(UNetDenoiser(loaded, guidance_scale=3.0)(z_t, 250, cond), eps)


@pytest.mark.parametrize("variant", ["perturbed", "adapter", "independent"])
def test_family_describe_and_schedules(variant):
    base, other = tiny_unet_family(variant, seed=7, scale=0.2, **TINY)
    for model in (base, other):
        info = json.loads(json.dumps(model.describe()))
        assert info["family"] == "unet"
        assert info["provenance"]["variant"] == variant and info["provenance"]["seed"] == 7
        assert info["provenance"]["scale"] == 0.2
        assert info["block_out_channels"] == [4, 8] and info["sample_size"] == 8
        assert info["cross_attention_dim"] == 32 and info["in_channels"] == 4
        assert info["n_parameters"] == sum(p.numel() for p in model.unet.parameters())
        assert info["guidance_scale"] == 3.0
    assert other.describe()["adapter_scale"] == (0.2 if variant == "adapter" else 0.0)
    assert same_schedule(base.scheduler, other.scheduler) == (variant != "independent")
    assert (other.unet is base.unet) == (variant == "adapter")
    if variant == "independent":
        assert not torch.equal(other.scheduler.alphas_cumprod, base.scheduler.alphas_cumprod)
        assert not torch.equal(base.unet.conv_in.weight, other.unet.conv_in.weight)


def test_condition_pair_distance():
    y1, y2 = condition_pair(9, distance=0.3, seq_len=16, dim=32)
    assert y1.shape == y2.shape == (1, 16, 32)
    assert torch.equal(y1, make_condition(9, seq_len=16, dim=32))
    per_entry = float((y2 - y1).double().pow(2).mean().sqrt())
    assert abs(per_entry / 0.3 - 1) < 0.15
    assert abs(float(y1.std()) - 1) < 0.15


def test_default_size_family_runs():
    """The one full-size (sample_size 64, block_out_channels (32, 64)) test."""
    base, other = tiny_unet_family("perturbed", seed=0, scale=0.05)
    assert base.latent_shape == (4, 64, 64)
    z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    y1, _ = condition_pair(0)
    eps_base, eps_other = base(z, 500, y1), other(z, 500, y1)
    assert eps_base.shape == (1, 4, 64, 64) and torch.isfinite(eps_base).all()
    assert 0 < _rel(eps_other, eps_base) < 1
