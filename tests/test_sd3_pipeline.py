"""Stable Diffusion 3 (rectified-flow) pipelines from local weights: tiny pipelines built here
(an SD3 transformer, a 16-channel VAE, two CLIP encoders with projections and a T5 encoder, all
from configs, tokenizers from vocabularies written here), saved with save_pretrained and loaded
back through the real code path. One model run by the AMDM sampler, by a loop written here, or
by `probe sd3` gives the pipeline's own latents bit for bit, with and without guidance; the
ecosystem fingerprint tells flow pipelines apart; every bad input is a one-line error. Any
attempt to open a network connection fails these tests."""

import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel, T5Tokenizer

from amdm_geom.app import cli
from amdm_geom.models.ecosystem import compare
from amdm_geom.models.fingerprint import flow_fingerprint
from amdm_geom.models.pipeline_specs import SD3PipelineSpec, SDPipelineSpec
from amdm_geom.models.pipelines import PipelineDenoiser, load_pipeline
from amdm_geom.sampling import AMDMSampler, SamplerConfig
from amdm_geom.store import built_of, open_run
from tests.tiny_pipelines import _seeded, tokenizer
from tests.tiny_pipelines import build as build_sd

JOINT, CLIP_WIDTHS, SEQ = 48, (16, 24), 16  # T5 width, the two CLIP widths (padded to JOINT), T5 tokens
PROMPT, NEGATIVE, STEPS, SEEDS = "a red cube", "blurry", 4, (0, 1)


def _t5_tokenizer() -> T5Tokenizer:
    """A unigram T5 tokenizer over single letters (and word-initial ones), built from its vocabulary."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in letters] \
        + [("\u2581" + c, -1.5) for c in letters] + [("\u2581", -2.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_sd3(folder, *, seed: int = 0, vae_seed: int = 100, text_seed: int = 200, shift: float = 3.0,
              sample_size: int = 8, dynamic: bool = False) -> Path:
    """Save a tiny StableDiffusion3Pipeline to ``folder`` (16 latent channels as SD3's VAE, VAE
    scale factor 2, patch size 2); ``dynamic`` gives its scheduler a resolution-dependent shift."""
    folder = Path(folder)
    clip_tok = tokenizer(folder.parent / f".{folder.name}_tokenizer")
    t5_tok = _t5_tokenizer()

    def clip(width, s):
        return _seeded(s, lambda: CLIPTextModelWithProjection(CLIPTextConfig(
            bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id,
            hidden_size=width, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=len(clip_tok), projection_dim=width)))

    t5 = _seeded(text_seed + 2, lambda: T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=JOINT, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8)))
    transformer = _seeded(seed, lambda: SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=JOINT, caption_projection_dim=16,
        pooled_projection_dim=sum(CLIP_WIDTHS), out_channels=16, pos_embed_max_size=2 * sample_size))
    vae = _seeded(vae_seed, lambda: AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=16, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=2 * sample_size, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5305))
    extra = {"use_dynamic_shifting": True, "base_image_seq_len": 4, "max_image_seq_len": 256} if dynamic else {}
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift, **extra), vae=vae,
        text_encoder=clip(CLIP_WIDTHS[0], text_seed), tokenizer=clip_tok, text_encoder_2=clip(CLIP_WIDTHS[1],
                                                                                              text_seed + 1),
        tokenizer_2=clip_tok, text_encoder_3=t5, tokenizer_3=t5_tok)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

    def refuse(*args, **kwargs):
        raise RuntimeError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("sd3")
    return {
        "sd3": build_sd3(d / "sd3"),
        "finetune": build_sd3(d / "finetune", seed=1),  # another transformer; same VAE, encoders and flow
        "other_vae": build_sd3(d / "other_vae", vae_seed=7),
        "other_shift": build_sd3(d / "other_shift", shift=1.0),
        "large": build_sd3(d / "large", sample_size=16),
        "dynamic": build_sd3(d / "dynamic", dynamic=True),
        "sd15": build_sd(d / "sd15"),
        "root": d,
    }


def reference(folder, guidance_scale, steps=STEPS, **kwargs):
    """The pipeline's own latents: StableDiffusion3Pipeline as diffusers runs it."""
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    return pipe(PROMPT, negative_prompt=NEGATIVE, num_images_per_prompt=len(SEEDS), num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=gens, output_type="latent", max_sequence_length=SEQ,
                **kwargs).images


def _model(folder, scale):
    return SD3PipelineSpec(path=folder, guidance=scale, max_sequence_length=SEQ).build()


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_a_loop_written_here_gives_the_pipelines_latents(folders, scale):
    """The denoiser alone, stepped by a FlowMatchEulerDiscreteScheduler loop written here."""
    model = _model(folders["sd3"], scale)
    cond = model.condition(PROMPT, negative_prompt=NEGATIVE)
    sched = FlowMatchEulerDiscreteScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(STEPS)
    z = torch.stack([torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(s)) for s in SEEDS])
    for t in sched.timesteps:
        z = sched.step(model(z, t, cond), t, z).prev_sample
    assert torch.equal(z, reference(folders["sd3"], scale))


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_one_model_run_by_the_sampler_is_the_pipeline_bit_for_bit(folders, scale):
    model = _model(folders["sd3"], scale)
    cond = model.condition(PROMPT, negative_prompt=NEGATIVE)
    out = AMDMSampler([model], [cond], SamplerConfig(num_inference_steps=STEPS, weights=())).sample(list(SEEDS))
    assert torch.equal(out.z0, reference(folders["sd3"], scale))


def test_a_resolution_shift_is_the_pipelines(folders):
    """A use_dynamic_shifting scheduler: the denoiser's flow_mu is the mu the pipeline computes."""
    model = _model(folders["dynamic"], 4.0)
    assert model.flow_mu is not None
    out = AMDMSampler([model], [model.condition(PROMPT, negative_prompt=NEGATIVE)],
                      SamplerConfig(num_inference_steps=STEPS, weights=())).sample(list(SEEDS))
    assert torch.equal(out.z0, reference(folders["dynamic"], 4.0))


def _probe(args, tmp_path, *extra):
    out = tmp_path / "run.zarr"
    per_model = [option for m in "ab" if f"--model-{m}.path" in args
                 for option in (f"--model-{m}.guidance", "4", f"--model-{m}.max-sequence-length", str(SEQ))]
    assert cli.main(["probe", "sd3", *args, *per_model, "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--steps",
                     str(STEPS), "--batch", str(len(SEEDS)), "--out", str(out), "--no-progress", *extra]) == 0
    return out


def test_one_model_through_the_probe_is_the_pipeline_and_its_images(folders, tmp_path, capsys):
    store = _probe(["--model-a.path", str(folders["sd3"])], tmp_path)
    ds = open_run(store)
    final = torch.from_numpy(ds.z_next.isel(step=ds.sizes["step"] - 1, model=0).values)
    want = reference(folders["sd3"], 4.0)
    assert torch.equal(final, want)
    assert ds.attrs["complete"] is True and built_of(ds).models[0]["family"] == "flow-pipeline"
    assert "decoded 2 images" in capsys.readouterr().out
    images = sorted((tmp_path / "run_images").glob("*.png"))
    assert [p.name for p in images] == ["seed0.png", "seed1.png"]
    # our decode is the pipeline's (scaling and shift factors)
    pipe = StableDiffusion3Pipeline.from_pretrained(folders["sd3"], local_files_only=True)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    pil = pipe(PROMPT, negative_prompt=NEGATIVE, num_images_per_prompt=2, num_inference_steps=STEPS, guidance_scale=4.0,
               generator=gens, max_sequence_length=SEQ).images
    from PIL import Image

    for path, image in zip(images, pil):
        with Image.open(path) as saved:
            assert saved.size == (16, 16) and np.array_equal(np.asarray(saved), np.asarray(image))


def test_two_pipelines_aggregated_by_the_probe(folders, tmp_path):
    store = _probe(["--model-a.path", str(folders["sd3"]), "--model-b.path", str(folders["finetune"]), "--prompt-b",
                    "a cube"], tmp_path, "--agg-steps", "2")
    ds = open_run(store)
    assert ds.attrs["complete"] is True and ds.sizes["model"] == 2
    assert np.isfinite(ds.z_next.isel(step=-1, model=0).values).all()


def test_the_fingerprint_tells_flow_pipelines_apart(folders):
    def fp(name):
        spec = SD3PipelineSpec(path=folders[name])
        pipe = load_pipeline(spec)
        return flow_fingerprint(pipe, PipelineDenoiser(pipe, spec).latent_shape)

    base = fp("sd3")
    same = compare(base, fp("finetune"))
    assert all(v["same"] for v in same.values())
    assert compare(base, fp("other_vae"))["vae"]["same"] is False
    shift = compare(base, fp("other_shift"))["sde"]
    assert shift["same"] is False
    assert compare(base, fp("large"))["latent_shape"]["same"] is False
    from amdm_geom.models.fingerprint import fingerprint

    sd15 = fingerprint(load_pipeline(SDPipelineSpec(path=folders["sd15"])), [16, 8, 8])
    assert compare(base, sd15)["sde"]["same"] is False  # a VP schedule is not a flow
    model = _model(folders["sd3"], 4.0)
    model(torch.zeros(1, *model.latent_shape), model.scheduler.timesteps[0], model.null_condition())
    assert model.ecosystem() == base  # (whatever the pipeline's scheduler was set to since)
    assert model.data_space == f"latents of VAE sha256:{base['vae_hash']}"


def test_conditions_and_descriptions(folders):
    model = _model(folders["sd3"], 4.0)
    cond = model.condition(PROMPT)
    assert cond.prompt_embeds.shape == (1, 77 + SEQ, JOINT) and cond.pooled_prompt_embeds.shape == (1, 40)
    assert not cond.prompt_embeds.requires_grad and cond.negative_prompt_embeds is not None
    again = model.condition(prompt_embeds=cond.prompt_embeds, pooled_prompt_embeds=cond.pooled_prompt_embeds,
                            negative_prompt_embeds=cond.negative_prompt_embeds,
                            negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds)
    z = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(model(z, 500.0, again), model(z, torch.tensor(500.0), cond))
    assert model.condition_kind == "sd3-prompt:48:40" and model.null_condition().describe()["prompt"] == ""
    assert _model(folders["sd3"], 1.0).condition(PROMPT).negative_prompt_embeds is None
    desc = model.describe()
    assert desc["family"] == "flow-pipeline" and desc["schedule"]["shift"] == 3.0 and desc["latent_shape"] == [16, 8, 8]


def test_the_denoiser_refuses_bad_sizes_settings_and_conditions(folders):
    spec = SD3PipelineSpec(path=folders["sd3"])
    pipe = load_pipeline(spec)
    for height in (6, 0, 8.0):  # (past the spec: what the pipeline itself accepts)
        bad = SD3PipelineSpec.model_construct(**{**spec.model_dump(), "height": height})
        with pytest.raises(ValueError) as info:
            PipelineDenoiser(pipe, bad)
        assert str(info.value) == (f"height must be a positive multiple of 4 (the VAE's scale factor 2 x the patch "
                                   f"size 2); got {height!r}")
    for settings, message in [({"guidance": float("nan")}, "guidance must be a finite number >= 0; got nan"),
                              ({"max_sequence_length": 0}, "max_sequence_length must be an int in [1, 512]; got 0"),
                              ({"max_sequence_length": 513}, "max_sequence_length must be an int in [1, 512]; got 513"),
                              ({"height": 12}, "height must be a positive multiple of 8 (pixels); got 12")]:
        with pytest.raises(ValueError) as info:
            SD3PipelineSpec(path=folders["sd3"], **settings)
        assert str(info.value) == message
    assert SD3PipelineSpec(path=folders["sd3"], max_sequence_length=512).max_sequence_length == 512
    model = PipelineDenoiser(pipe, spec.replace(height=16, width=8, guidance=4.0, max_sequence_length=SEQ))
    assert model.latent_shape == (16, 8, 4)
    z = torch.zeros(1, *model.latent_shape)
    for call, match in [
        (lambda: model(z, 500.0, "a cube"), "cond must be an SD3Condition from model.condition(...); got str"),
        (lambda: model(z, 500.0, _model(folders["sd3"], 1.0).condition("x")), "guidance needs a condition encoded"),
        (lambda: model(z, torch.ones(2), model.null_condition()), "t must be one timestep"),
        (lambda: model(torch.zeros(1, 16, 8, 8), 500.0, model.null_condition()), "latents must have shape"),
        (lambda: model.condition(), "a condition needs a prompt or prompt_embeds"),
        (lambda: model.condition(prompt_embeds=torch.zeros(1, 3, JOINT)), "prompt_embeds need pooled_prompt_embeds"),
    ]:
        with pytest.raises(ValueError, match=re.escape(match)) as info:
            call()
        assert "\n" not in str(info.value)


def _fake_checkpoint(root: Path) -> Path:
    path = root / "model.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(1)}, path)
    return path


@pytest.mark.parametrize("make,match", [
    (lambda d, r: ["--model-a.path", str(r / "missing")],
     "argument --model-a.path: must be an existing pipeline folder or checkpoint file; no pipeline folder"),
    (lambda d, r: ["--model-a.path", str(d["sd3"] / "transformer")],
     r"is not a diffusers pipeline \(no model_index.json\)"),
    (lambda d, r: ["--model-a.path", str(d["sd15"])], "holds a StableDiffusionPipeline, not a flow-matching pipeline"),
    (lambda d, r: ["--model-a.path", str(_fake_checkpoint(r))], "needs config=, a local diffusers config folder"),
    (lambda d, r: ["--model-a.path", str(d["sd3"]), "--model-b.path", str(d["large"])],
     "models must share one latent shape"),
    (lambda d, r: ["--model-a.path", str(d["sd3"]), "--model-b.path", str(d["other_vae"])],
     "different ecosystem.*pass --insist"),
    (lambda d, r: ["--model-a.path", str(d["sd3"]), "--prompt-b", "x"],
     "argument --prompt-b: needs --model-b.path"),
    (lambda d, r: ["--model-a.path", str(d["sd3"]), "--model-a.device", "tpu"],
     "argument --model-a.device: must be cpu, cuda, cuda:N or mps"),
    (lambda d, r: ["--model-a.path", str(d["sd3"]), "--model-a.max-sequence-length", "0"],
     r"argument --model-a.max-sequence-length: must be an int in \[1, 512\]; got 0"),
    (lambda d, r: ["--model-a.path", str(d["sd3"]), "--model-a.gligen-beta", "0.5"],
     "unrecognized arguments: --model-a.gligen-beta 0.5"),
])
def test_bad_inputs_are_one_line_errors(folders, tmp_path, capsys, make, match):
    args = ["probe", "sd3", *make(folders, tmp_path), "--prompt", "x", "--steps", "2", "--batch", "1",
            "--no-progress", "--out", str(tmp_path / "x.zarr")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err  # (diffusers' loading progress bars may come first)
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("amdm-geom probe: error:") and "Traceback" not in err
    assert re.search(match, last), err
    assert not (tmp_path / "x.zarr").exists()


def test_another_ecosystem_runs_with_insist(folders, tmp_path):
    store = _probe(["--model-a.path", str(folders["sd3"]), "--model-b.path", str(folders["other_vae"])], tmp_path,
                   "--agg-steps", "2", "--insist")
    assert open_run(store).attrs["complete"] is True


def test_sd_probe_refuses_an_sd3_folder(folders, tmp_path, capsys):
    args = ["probe", "sd", "--model-a.path", str(folders["sd3"]), "--prompt", "x", "--steps", "2", "--batch", "1",
            "--no-progress", "--out", str(tmp_path / "x.zarr")]
    assert cli.main(args) == 2
    assert "not a UNet diffusion pipeline" in capsys.readouterr().err.rstrip("\n").split("\n")[-1]
