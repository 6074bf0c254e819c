"""A tiny, randomly initialised Stable Diffusion img2img model, built offline from configs.

Same layout as ``stabilityai/sd-turbo`` on disk (``model_index.json``, ``unet``, ``vae``,
``text_encoder``, ``tokenizer``, ``scheduler``) and the same scheduler (Euler, trailing
timesteps), with every component shrunk to a few thousand weights. The tokenizer is a byte-level
BPE with no merges: one token per byte, which CLIP's tokenizer accepts as a vocabulary. Nothing
is downloaded; the weights depend only on ``seed``.

Its pieces are the other tiny builders' too (:mod:`benchmarks.harness.tiny_ai_images`,
:mod:`benchmarks.harness.tiny_ai_text`): the byte vocabulary (:func:`byte_symbols`), the
tokenizer and text encoder (:func:`tokenizer`, :func:`text_encoder`), a whole tiny Stable
Diffusion's components made from one seed (:func:`components`), and :func:`save`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# Imported by name: their annotations are too loose for mypy --strict to follow.
diffusers: Any = importlib.import_module("diffusers")
transformers: Any = importlib.import_module("transformers")

__all__ = [
    "TOKENS",
    "build_tiny_img2img",
    "byte_symbols",
    "components",
    "diffusers",
    "save",
    "text_encoder",
    "tokenizer",
    "transformers",
]

TOKENS = 16
"""Prompt length in tokens (sd-turbo: 77)."""

_WIDTH = 32
"""Text embedding width, the UNet's cross-attention width (sd-turbo and the x4 upscaler:
1024)."""


def byte_symbols() -> list[str]:
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


def tokenizer() -> Any:
    """CLIP's tokenizer over a byte vocabulary (no merges: one token per byte), prompts of
    :data:`TOKENS` tokens."""
    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TOKENS)


def text_encoder(clip_tokenizer: Any) -> Any:
    """A tiny random CLIP text encoder for ``clip_tokenizer`` (a :func:`tokenizer`):
    32 wide, :data:`TOKENS` positions."""
    end = clip_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=_WIDTH,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=TOKENS,
            bos_token_id=clip_tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            eos_token_id=end,
            pad_token_id=end,
        )
    )


def _unet(*, sample_size: int, in_channels: int, **options: Any) -> Any:
    """A tiny random two-level UNet predicting 4 latent channels, with cross-attention to
    32 wide text."""
    return diffusers.UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_WIDTH,
        attention_head_dim=(2, 4),
        **options,
    )


def _vae(*, block_out_channels: tuple[int, ...], **options: Any) -> Any:
    """A tiny random RGB VAE with 4 latent channels, one level per entry of
    ``block_out_channels``."""
    levels = len(block_out_channels)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        **options,
    )


def components(*, seed: int, unet: Mapping[str, Any], vae: Mapping[str, Any]) -> dict[str, Any]:
    """A tiny random Stable Diffusion's tokenizer (:func:`tokenizer`), UNet, VAE and text
    encoder (:func:`text_encoder`), keyed as diffusers' pipelines take them.

    The weights are drawn after ``torch.manual_seed(seed)``, the UNet's, then the VAE's, then
    the text encoder's: they depend only on ``seed`` and the options.

    Args:
        seed: the weights' seed.
        unet: the UNet's ``sample_size`` and ``in_channels``, and any other option of
            ``UNet2DConditionModel`` (two levels, cross-attention to 32 wide text).
        vae: the VAE's ``block_out_channels``, one level each (pictures are
            ``2 ** (levels - 1)`` times the latents' size), and any other option of
            ``AutoencoderKL`` (RGB, 4 latent channels).
    """
    clip_tokenizer = tokenizer()
    torch.manual_seed(seed)
    denoiser = _unet(**unet)
    autoencoder = _vae(**vae)
    encoder = text_encoder(clip_tokenizer)
    return {
        "tokenizer": clip_tokenizer,
        "unet": denoiser,
        "vae": autoencoder,
        "text_encoder": encoder,
    }


def save(directory: Path, *parts: Any) -> Path:
    """Saves each of ``parts`` (a pipeline, a model, its tokenizer or processor) into
    ``directory`` (created) with ``save_pretrained``, and returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for part in parts:
        part.save_pretrained(directory)
    return directory


def build_tiny_img2img(directory: Path, *, seed: int = 0) -> Path:
    """Saves a tiny random img2img model into ``directory`` (created) and returns it."""
    parts = components(
        seed=seed,
        unet={"sample_size": 8, "in_channels": 4},  # latents of 64x64 pictures
        # Four levels: pictures are 8 times the latents' size, as in Stable Diffusion.
        vae={"block_out_channels": (8, 16, 32, 32)},
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
        **parts,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save(directory, pipe)
