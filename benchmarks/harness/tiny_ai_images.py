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

from benchmarks.harness.tiny_diffusion import (
    build_tiny_img2img,
    components,
    diffusers,
    save,
    transformers,
)

__all__ = ["build_tiny_sd", "build_tiny_upscaler", "diffusers", "transformers"]


def build_tiny_sd(directory: Path, *, seed: int = 0) -> Path:
    """Saves the tiny Stable Diffusion model into ``directory`` (created) and returns it."""
    return build_tiny_img2img(directory, seed=seed)


def build_tiny_upscaler(directory: Path, *, seed: int = 0) -> Path:
    """Saves a tiny random x4 upscaler into ``directory`` (created) and returns it."""
    parts = components(
        seed=seed,
        unet={
            "sample_size": 16,
            "in_channels": 7,  # 4 latent channels + the 3 channels of the noised low-res picture
            # The noise level added to the low-res picture is the class label, as in the real one.
            "num_class_embeds": 1000,
        },
        # Three levels: the decoder upsamples twice, pictures are 4 times the latents' size.
        vae={"block_out_channels": (8, 16, 16), "scaling_factor": 0.08333},
    )
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
        **parts, low_res_scheduler=low_res_scheduler, scheduler=scheduler, max_noise_level=350
    )
    return save(directory, pipe)
