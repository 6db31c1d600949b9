"""Real Stable Diffusion pipelines from local weights: tiny pipelines built here, saved with
save_pretrained and loaded back through the real code path. One model run by the AMDM probe
gives the pipeline's own latents bit for bit (plain, GLIGEN, IP-Adapter); LoRA weights load;
the ecosystem check tells pipelines apart; every bad path is a one-line error. Any attempt to
open a network connection fails these tests."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionGLIGENPipeline, StableDiffusionPipeline
from PIL import Image

from amdm_geom.app import cli
from amdm_geom.core.spec import SpecError
from amdm_geom.models.ecosystem import check
from amdm_geom.models.pipeline_specs import SDPipelineSpec
from amdm_geom.models.pipelines import PipelineDenoiser, load_pipeline
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import built_of, open_run
from tests.tiny_pipelines import build


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

    def refuse(*args, **kwargs):
        raise RuntimeError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipelines")
    return {
        "sd": build(d / "sd"),
        "gligen": build(d / "gligen", gligen=True),
        "other_vae": build(d / "other_vae", vae_seed=7),
        "linear": build(d / "linear", schedule="linear"),
        "large": build(d / "large", sample_size=16),
        "finetune": build(d / "finetune", seed=1),  # another UNet, same VAE, text encoder and SDE
        "root": d,
    }


def probe(args, tmp_path):
    out = tmp_path / "run.zarr"
    assert cli.main(["probe", "sd", *args, "--steps", "6", "--batch", "2", "--model-a.guidance", "3", "--out", str(out),
                     "--no-progress"]) == 0
    return out


def model_of(folder, **settings) -> PipelineDenoiser:
    """The denoiser of the pipeline in ``folder`` with ``settings`` (its spec's build)."""
    return SDPipelineSpec(path=folder, **settings).build()


def pipeline(folder, **settings):
    """The pipeline in ``folder``, loaded with ``settings``."""
    return load_pipeline(SDPipelineSpec(path=folder, **settings))


def final_latents(store):
    ds = open_run(store)
    return torch.from_numpy(ds.z_next.isel(step=ds.sizes["step"] - 1, model=0).values)


def reference(cls, folder, guidance_scale=3.0, **kwargs):
    pipe = cls.from_pretrained(folder, local_files_only=True)
    pipe.scheduler = type(pipeline(folder).scheduler).from_config(pipe.scheduler.config)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    return pipe(num_images_per_prompt=2, num_inference_steps=6, guidance_scale=guidance_scale, generator=gens,
                output_type="latent", **kwargs).images


def test_one_model_through_the_probe_is_the_pipeline_bit_for_bit(folders, tmp_path, capsys):
    store = probe(["--model-a.path", str(folders["sd"]), "--prompt", "a red cube", "--negative-prompt", "blurry"],
                  tmp_path)
    want = reference(StableDiffusionPipeline, folders["sd"], prompt="a red cube", negative_prompt="blurry")
    assert torch.equal(final_latents(store), want)
    assert "decoded 2 images" in capsys.readouterr().out
    images = sorted((tmp_path / "run_images").glob("*.png"))
    assert [p.name for p in images] == ["seed0.png", "seed1.png"]
    with Image.open(images[0]) as image:
        assert image.size == (16, 16)
    ds = open_run(store)
    assert ds.attrs["complete"] is True and built_of(ds).models[0]["family"] == "pipeline"


def test_gligen_through_the_probe_is_the_gligen_pipeline(folders, tmp_path):
    boxes = [[0.1, 0.1, 0.5, 0.5], [0.5, 0.2, 0.9, 0.8]]
    store = probe(["--model-a.path", str(folders["gligen"]), "--prompt", "a cube and a ball", "--gligen-boxes",
                   *map(str, sum(boxes, [])), "--gligen-phrases", "a cube", "a ball"], tmp_path)
    want = reference(StableDiffusionGLIGENPipeline, folders["gligen"], prompt="a cube and a ball",
                     gligen_boxes=boxes, gligen_phrases=["a cube", "a ball"], gligen_scheduled_sampling_beta=0.3)
    assert torch.equal(final_latents(store), want)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_guidance_rule_is_the_pipelines_bit_for_bit(folders, scale):
    """diffusers guides only above 1 (do_classifier_free_guidance); so does PipelineDenoiser, and
    one model run by the sampler gives StableDiffusionPipeline's latents at every scale."""
    model = model_of(folders["sd"], guidance=scale)
    cond = model.condition("a red cube", negative_prompt="blurry")
    out = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=6, weights=())).sample([0, 1])
    want = reference(StableDiffusionPipeline, folders["sd"], guidance_scale=scale, prompt="a red cube",
                     negative_prompt="blurry")
    assert torch.equal(out.z0, want)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_pipeline_eps_is_the_conditional_eps_unless_guided(folders, scale):
    model = model_of(folders["sd"], guidance=scale)
    cond = model.condition("a red cube", negative_prompt="blurry")
    z_t = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(4))  # (B, C, H, W)
    batches = []
    handle = model.net.register_forward_hook(lambda mod, args, out: batches.append(args[0].shape[0]))
    try:
        eps = model(z_t, 501, cond)
    finally:
        handle.remove()
    with torch.no_grad():  # the UNet called directly, one condition at a time
        eps_c = model.net(z_t, 501, encoder_hidden_states=cond.prompt_embeds.expand(2, -1, -1)).sample
    if scale <= 1:
        assert batches == [2] and cond.negative_prompt_embeds is None
        assert torch.equal(eps, eps_c)
    else:
        assert batches == [4]  # one pass on the doubled batch
        with torch.no_grad():
            eps_u = model.net(z_t, 501, encoder_hidden_states=cond.negative_prompt_embeds.expand(2, -1, -1)).sample
        torch.testing.assert_close(eps, eps_u + 3.0 * (eps_c - eps_u), rtol=1e-5, atol=1e-5)
        assert float((eps - eps_c).norm()) > 1e-3 * float(eps_c.norm())  # guidance changed eps


@pytest.fixture(scope="module")
def ip_adapter(folders):
    """A tiny CLIP image encoder and IP-Adapter weights in the original layout, saved here."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = folders["root"]
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
        patch_size=4, projection_dim=32))
    encoder.save_pretrained(root / "image_encoder")
    processor = CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32})
    processor.save_pretrained(root / "image_encoder")
    unet = pipeline(folders["sd"]).unet
    cross, tokens = unet.config.cross_attention_dim, 4
    g = torch.Generator().manual_seed(3)
    flat = {"image_proj.proj.weight": 0.1 * torch.randn(cross * tokens, 32, generator=g),
            "image_proj.proj.bias": torch.zeros(cross * tokens), "image_proj.norm.weight": torch.ones(cross),
            "image_proj.norm.bias": torch.zeros(cross)}
    channels, key = unet.config.block_out_channels, 1
    for name in unet.attn_processors:  # one pair of (to_k_ip, to_v_ip) per cross-attention, numbered 1, 3, 5, ...
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")[0]
        hidden = (channels[-1] if block == "mid_block" else list(reversed(channels))[int(name.split(".")[1])]
                  if block == "up_blocks" else channels[int(name.split(".")[1])])
        flat[f"ip_adapter.{key}.to_k_ip.weight"] = 0.3 * torch.randn(hidden, cross, generator=g)
        flat[f"ip_adapter.{key}.to_v_ip.weight"] = 0.3 * torch.randn(hidden, cross, generator=g)
        key += 2
    (root / "ipa").mkdir(exist_ok=True)
    safetensors.torch.save_file(flat, root / "ipa" / "ip-adapter.safetensors")
    image = root / "reference.png"
    Image.fromarray(np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.uint8)).save(image)
    return {"folder": root / "ipa", "weight": "ip-adapter.safetensors", "encoder": root / "image_encoder",
            "image": image}


def rgb(path):
    with Image.open(path) as image:
        return image.convert("RGB")


def test_ip_adapter_through_the_probe_is_the_pipeline(folders, ip_adapter, tmp_path):
    store = probe(["--model-a.path", str(folders["sd"]), "--prompt", "a cube", "--model-a.ip-adapter",
                   str(ip_adapter["folder"]), "--model-a.ip-adapter-weight-name", ip_adapter["weight"],
                   "--model-a.ip-adapter-image-encoder", str(ip_adapter["encoder"]),
                   "--ip-adapter-image", str(ip_adapter["image"]), "--model-a.ip-adapter-scale", "0.8"], tmp_path)
    settings = {"ip_adapter": ip_adapter["folder"], "ip_adapter_weight_name": ip_adapter["weight"],
                "ip_adapter_image_encoder": ip_adapter["encoder"], "ip_adapter_scale": 0.8}
    pipe = pipeline(folders["sd"], **settings)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    want = pipe("a cube", ip_adapter_image=rgb(ip_adapter["image"]), num_images_per_prompt=2,
                num_inference_steps=6, guidance_scale=3.0, generator=gens, output_type="latent").images
    assert torch.equal(final_latents(store), want)
    # and the image matters
    model = PipelineDenoiser(pipe, SDPipelineSpec(path=folders["sd"], guidance=3.0, **settings))
    z = torch.randn(1, 4, 8, 8)
    y1 = model.condition("a cube", ip_adapter_image=rgb(ip_adapter["image"]))
    y0 = model.condition("a cube", ip_adapter_image=Image.new("RGB", (32, 32)))
    assert not torch.allclose(model(z, 500, y1), model(z, 500, y0))


def test_the_ip_adapter_image_and_weights_go_together(folders, ip_adapter, tmp_path, capsys):
    args = ["probe", "sd", "--model-a.path", str(folders["sd"]), "--prompt", "x", "--steps", "2", "--no-progress",
            "--out", str(tmp_path / "x.zarr")]
    assert cli.main([*args, "--model-a.ip-adapter", str(ip_adapter["folder"])]) == 2
    assert capsys.readouterr().err.strip() == \
        "amdm-geom probe: error: argument --model-a.ip-adapter: needs --ip-adapter-image"
    assert cli.main([*args, "--ip-adapter-image", str(ip_adapter["image"])]) == 2
    assert capsys.readouterr().err.strip().startswith(
        "amdm-geom probe: error: argument --ip-adapter-image: needs a model with an IP-Adapter (--model-a.ip-adapter)")
    assert not (tmp_path / "x.zarr").exists()


@pytest.fixture(scope="module")
def lora(folders):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = pipeline(folders["sd"]).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; give the LoRA an effect
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    folder = folders["root"] / "lora"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(
        get_peft_model_state_dict(unet)))
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_weights_load_and_scale(folders, lora):
    base = model_of(folders["sd"], guidance=1.0)
    full = model_of(folders["sd"], lora=lora, lora_scale=1.0, guidance=1.0)
    none = model_of(folders["sd"], lora=lora.parent, lora_scale=0.0, guidance=1.0)
    z = torch.randn(2, 4, 8, 8)
    e_base = base(z, 400, base.condition("a cube"))
    assert torch.equal(none(z, 400, none.condition("a cube")), e_base)
    change = float((full(z, 400, full.condition("a cube")) - e_base).norm() / e_base.norm())
    assert change > 0.05


def test_two_pipelines_aggregated_by_the_probe(folders, lora, tmp_path):
    store = probe(["--model-a.path", str(folders["sd"]), "--model-b.path", str(folders["finetune"]),
                   "--model-b.lora", str(lora), "--model-b.guidance", "3", "--prompt", "a red cube", "--prompt-b",
                   "a cube", "--agg-steps", "3", "--cross-eps"], tmp_path)
    ds = open_run(store)
    assert ds.sizes["model"] == 2 and ds.attrs["complete"] is True
    assert list(ds.aggregated.values) == [True] * 3 + [False] * 3
    assert np.isfinite(ds.agg_z.isel(step=slice(0, 3)).values).all()
    built = built_of(ds)
    assert built.conditions[1]["prompt"] == "a cube" and built.models[1]["lora"] == str(lora)


def test_ecosystem_check(folders):
    same = check(folders["sd"], folders["finetune"])
    assert same.verdict == "same" and all(v["same"] for v in same.checks.values())
    assert all(v > 0 for v in same.proximity.values())  # different UNets: eps differ
    assert check(folders["sd"], folders["sd"]).proximity == {t: 0.0 for t in same.proximity}
    vae = check(folders["sd"], folders["other_vae"])
    assert vae.verdict == "different"
    assert vae.checks["vae"]["same"] is False and vae.checks["vae"]["weights_same"] is False
    sde = check(folders["sd"], folders["linear"])
    assert sde.verdict == "different" and set(sde.checks["sde"]["differences"]) >= {"beta_schedule", "beta_end"}
    shape = check(folders["sd"], folders["large"])
    assert shape.verdict == "different" and shape.proximity == {}


def test_sampler_refuses_other_ecosystems_unless_asked(folders, tmp_path, capsys):
    a = model_of(folders["sd"], guidance=3.0)
    b = model_of(folders["other_vae"], guidance=3.0)
    conds = [a.condition("x"), b.condition("y")]
    with pytest.raises(ValueError, match="different ecosystem from model 0 \\(vae differ\\)"):
        AMDMSampler([a, b], conds, SamplerConfig(num_inference_steps=4, agg_steps=2))
    AMDMSampler([a, b], conds, SamplerConfig(num_inference_steps=4, agg_steps=2, allow_schedule_mismatch=True))
    args = ["probe", "sd", "--model-a.path", str(folders["sd"]), "--model-b.path", str(folders["other_vae"]),
            "--prompt", "x", "--steps", "4", "--agg-steps", "2", "--batch", "1", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "refused.zarr")]) == 2
    assert "different ecosystem" in capsys.readouterr().err
    assert not (tmp_path / "refused.zarr").exists()
    assert cli.main([*args, "--insist", "--out", str(tmp_path / "insisted.zarr")]) == 0


def test_cli_ecosystem_prints_and_writes_json(folders, tmp_path, capsys):
    out = tmp_path / "eco.json"
    assert cli.main(["ecosystem", str(folders["sd"]), str(folders["linear"]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "verdict: DIFFERENT" in printed and "sde" in printed and "functional proximity" in printed
    assert json.loads(out.read_text())["verdict"] == "different"


@pytest.mark.parametrize("make,match", [
    (lambda d, r: ["--model-a.path", str(r / "missing")],
     "argument --model-a.path: must be an existing pipeline folder or checkpoint file; no pipeline folder or "
     "checkpoint file at"),
    (lambda d, r: ["--model-a.path", str(d["sd"] / "unet")], "is not a diffusers pipeline \\(no model_index.json\\)"),
    (lambda d, r: ["--model-a.path", str(_fake_checkpoint(r))], "needs config=, a local diffusers config folder"),
    (lambda d, r: ["--model-a.path", str(d["sd"]), "--model-b.path", str(d["large"])],
     "models must share one latent shape"),
    (lambda d, r: ["--model-a.path", str(d["sd"]), "--gligen-boxes", "0.1", "0.1", "0.5", "0.5", "--gligen-phrases",
                   "x"], "no model is a GLIGEN pipeline"),
    (lambda d, r: ["--model-a.path", str(d["gligen"]), "--gligen-boxes", "0.1", "0.1", "0.5", "--gligen-phrases",
                   "x"], "four numbers per box"),
    (lambda d, r: ["--model-a.path", str(d["sd"]), "--model-b.guidance", "2"], "argument --model-b.path: is required"),
    (lambda d, r: ["--model-a.path", str(d["sd"]), "--model-a.device", "tpu"],
     "argument --model-a.device: must be cpu, cuda, cuda:N or mps"),
    (lambda d, r: ["--model-a.path", str(d["sd"]), "--prompt-b", "y"], "argument --prompt-b: needs --model-b.path"),
])
def test_bad_inputs_are_one_line_errors(folders, tmp_path, capsys, make, match):
    args = ["probe", "sd", *make(folders, tmp_path), "--prompt", "x", "--steps", "2", "--batch", "1", "--no-progress",
            "--out", str(tmp_path / "x.zarr")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err  # (diffusers' loading progress bars may come first)
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("amdm-geom probe: error:") and "Traceback" not in err
    import re

    assert re.search(match, last), err
    assert not (tmp_path / "x.zarr").exists()


def _fake_checkpoint(root: Path) -> Path:
    path = root / "model.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(1)}, path)
    return path


def test_pipeline_denoiser_refuses_bad_sizes_and_the_spec_bad_settings(folders):
    pipe = pipeline(folders["sd"])
    factor = pipe.vae_scale_factor
    for height in (-64, 0, factor + 1, 8.0):  # (past the spec: what the pipeline itself accepts)
        spec = SDPipelineSpec.model_construct(**{**SDPipelineSpec(path=folders["sd"]).model_dump(), "height": height})
        with pytest.raises(ValueError) as info:
            PipelineDenoiser(pipe, spec)
        assert str(info.value) == (f"height must be a positive multiple of {factor} (the VAE's scale factor {factor}); "
                                   f"got {height!r}")
    for settings, message in [
        ({"height": 12}, "height must be a positive multiple of 8 (pixels); got 12"),
        ({"guidance": float("nan")}, "guidance must be a finite number >= 0; got nan"),
        ({"guidance": True}, "guidance must be a finite number >= 0; got True"),
        ({"gligen_beta": 1.5}, "gligen_beta must be a finite number in [0, 1]; got 1.5"),
        ({"device": "tpu"}, "device must be cpu, cuda, cuda:N or mps (available here: "),
    ]:
        with pytest.raises(SpecError) as info:
            SDPipelineSpec(path=folders["sd"], **settings)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
    model = PipelineDenoiser(pipe, SDPipelineSpec(path=folders["sd"], height=np.int64(8 * factor), width=4 * factor))
    assert model.latent_shape[1:] == (8, 4) and model.image_size == (8 * factor, 4 * factor)


def test_sd_probe_checks_options_before_loading(folders, tmp_path, capsys):
    """Steps beyond the pipeline's schedule are the sampler's one line, after loading but before
    any store; --names and the window are refused before loading."""
    args = ["probe", "sd", "--model-a.path", str(folders["sd"]), "--prompt", "x", "--batch", "1", "--no-progress",
            "--out", str(tmp_path / "x.zarr")]
    assert cli.main([*args, "--steps", "1001"]) == 2
    assert "num_inference_steps must be <= 1000" in capsys.readouterr().err.rstrip("\n").split("\n")[-1]
    assert cli.main([*args, "--steps", "2", "--names", "model1.*"]) == 2  # one model: no model1
    assert capsys.readouterr().err.startswith("amdm-geom probe: error: argument --names: 'model1.*' matches no hook")
    assert not list(tmp_path.iterdir())
