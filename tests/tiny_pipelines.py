"""Tiny Stable Diffusion pipelines built offline from configs and saved with save_pretrained,
so the loading code can be tested on real folders (nothing is downloaded)."""

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionGLIGENPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from amdm_geom.core.schedules import SCHEDULE_KINDS, SD15_SCHEDULER_CONFIG

CROSS_DIM = 32


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tokenizer(folder: Path) -> CLIPTokenizer:
    """A character-level CLIP tokenizer from a vocab and an empty merges file written here."""
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _seeded(seed, build):
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return build()


def build(folder, *, seed: int = 0, vae_seed: int = 100, text_seed: int = 200, schedule: str = "scaled_linear",
          gligen: bool = False, sample_size: int = 8) -> Path:
    """Save a tiny (GLIGEN) Stable Diffusion pipeline to ``folder``; returns the folder."""
    folder = Path(folder)
    tok = tokenizer(folder.parent / f".{folder.name}_tokenizer")
    unet = _seeded(seed, lambda: UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=2, norm_num_groups=8,
        attention_type="gated" if gligen else "default"))
    vae = _seeded(vae_seed, lambda: AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=sample_size * 2))
    text = _seeded(text_seed, lambda: CLIPTextModel(CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        hidden_size=CROSS_DIM, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=len(tok))))
    scheduler = DDIMScheduler(**{**SD15_SCHEDULER_CONFIG, **SCHEDULE_KINDS[schedule]})
    cls = StableDiffusionGLIGENPipeline if gligen else StableDiffusionPipeline
    pipe = cls(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None,
               feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
