"""A tiny, randomly initialised Stable Diffusion img2img model, built offline from configs.

Same layout as ``stabilityai/sd-turbo`` on disk (``model_index.json``, ``unet``, ``vae``,
``text_encoder``, ``tokenizer``, ``scheduler``) and the same scheduler (Euler, trailing
timesteps), with every component shrunk to a few thousand weights. The tokenizer is a byte-level
BPE with no merges: one token per byte, which CLIP's tokenizer accepts as a vocabulary. Nothing
is downloaded; the weights depend only on ``seed``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

# Imported by name: their annotations are too loose for mypy --strict to follow.
diffusers: Any = importlib.import_module("diffusers")
transformers: Any = importlib.import_module("transformers")

__all__ = ["TOKENS", "build_tiny_img2img", "diffusers", "transformers"]

TOKENS = 16
"""Prompt length in tokens (sd-turbo: 77)."""

_WIDTH = 32
"""Text embedding width, the UNet's cross-attention width (sd-turbo: 1024)."""


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-printable-character table, as byte-level BPE vocabularies use it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _tokenizer() -> Any:
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TOKENS)


def build_tiny_img2img(directory: Path, *, seed: int = 0) -> Path:
    """Saves a tiny random img2img model into ``directory`` (created) and returns it."""
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,  # latents of 64x64 pictures
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_WIDTH,
        attention_head_dim=(2, 4),
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four levels: pictures are 8 times the latents' size, as in Stable Diffusion.
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_WIDTH,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=TOKENS,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            eos_token_id=end,
            pad_token_id=end,
        )
    )
    # sd-turbo's scheduler, as its scheduler_config.json has it.
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipe = diffusers.StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
    return directory
