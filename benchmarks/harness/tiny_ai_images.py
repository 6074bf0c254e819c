"""Tiny, randomly initialised picture models for the batch image pipelines, built offline.

* :func:`build_tiny_sd` is the tiny Stable Diffusion of :mod:`benchmarks.harness.tiny_diffusion`
  (saved as an img2img pipeline; the same directory loads as a text-to-image one);
* :func:`build_tiny_upscaler` is a ``StableDiffusionUpscalePipeline`` laid out as
  ``stabilityai/stable-diffusion-x4-upscaler``: a UNet that reads the latents and the noised
  low-resolution picture (7 input channels) and takes the noise level as a class label, a VAE
  whose decoder upsamples 4 times (scaling factor 0.08333, as the real one's config says), the
  byte-level tokenizer and a tiny CLIP text encoder, a DDPM ``low_res_scheduler`` and a
  v-prediction DDIM ``scheduler``.

Every component is shrunk to a few thousand weights; nothing is downloaded and the weights
depend only on ``seed``. Each builds in about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.tiny_diffusion import (
    TOKENS,
    _tokenizer,
    build_tiny_img2img,
    diffusers,
    transformers,
)

__all__ = ["build_tiny_sd", "build_tiny_upscaler", "diffusers", "transformers"]

_WIDTH = 32
"""Text embedding width, the UNet's cross-attention width (the real upscaler: 1024)."""


def build_tiny_sd(directory: Path, *, seed: int = 0) -> Path:
    """Saves the tiny Stable Diffusion model into ``directory`` (created) and returns it."""
    return build_tiny_img2img(directory, seed=seed)


def _text_encoder(tokenizer: Any) -> Any:
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return transformers.CLIPTextModel(
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


def build_tiny_upscaler(directory: Path, *, seed: int = 0) -> Path:
    """Saves a tiny random x4 upscaler into ``directory`` (created) and returns it."""
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=7,  # 4 latent channels + the 3 channels of the noised low-res picture
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_WIDTH,
        attention_head_dim=(2, 4),
        # The noise level added to the low-res picture is the class label, as in the real one.
        num_class_embeds=1000,
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Three levels: the decoder upsamples twice, pictures are 4 times the latents' size.
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.08333,
    )
    text_encoder = _text_encoder(tokenizer)
    # The schedulers of stabilityai/stable-diffusion-x4-upscaler.
    low_res_scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="scaled_linear",
        clip_sample=True,
        prediction_type="epsilon",
        variance_type="fixed_small",
    )
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
    pipe = diffusers.StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=low_res_scheduler,
        scheduler=scheduler,
        max_noise_level=350,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
    return directory
