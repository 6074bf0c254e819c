"""Tiny, randomly initialised text models (Whisper, a GPT-2 style causal LM), built offline.

Both are saved with ``save_pretrained`` in the layout of the real models (``config.json``,
``generation_config.json``, weights, tokenizer files, for Whisper the feature extractor's
``preprocessor_config.json``), so the batch pipelines load them exactly as they load
``openai/whisper-large-v3`` or a chat model. Their tokenizers are byte-level BPE vocabularies
with no merges (one token per byte, as ``tiny_diffusion``'s) plus the special tokens each model
family needs. Nothing is downloaded; the weights depend only on ``seed``; each builds in well
under a second.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.tiny_diffusion import byte_symbols, save, transformers

# Imported by name: its annotations are too loose for mypy --strict to follow.
tokenizers: Any = importlib.import_module("tokenizers")

__all__ = [
    "CHAT_TEMPLATE",
    "LM_CONTEXT",
    "WHISPER_LANGUAGES",
    "build_tiny_causal_lm",
    "build_tiny_whisper",
    "transformers",
]

WHISPER_LANGUAGES = ("en", "fr")
"""Language tokens of the tiny Whisper, in Whisper's own order (``en`` first)."""

_WHISPER_TARGET_POSITIONS = 24
"""Tokens the tiny Whisper decoder takes (the real one: 448): keeps generation short."""

LM_CONTEXT = 256
"""The tiny causal LM's context in tokens (``n_positions``)."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""The tiny causal LM's chat template: role markers around each message."""


def _ends(end: int) -> dict[str, int]:
    """The end-of-text token ``end`` as the start, end and padding token of a config: both
    tiny models use it for all three, as GPT-2 does."""
    return {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end}


def _whisper_tokenizer() -> Any:
    """Whisper's tokenizer over a byte vocabulary: bytes, then the special tokens in Whisper's
    order (``<|notimestamps|>`` last, as timestamp ids are counted from it)."""
    vocab = {s: i for i, s in enumerate(byte_symbols())}
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in WHISPER_LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tokenizer = transformers.WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens(
        {"additional_special_tokens": specials[1:]}, replace_extra_special_tokens=True
    )
    return tokenizer


def build_tiny_whisper(directory: Path, *, seed: int = 0) -> Path:
    """Saves a tiny random Whisper (model, processor, generation config) into ``directory``
    (created) and returns it.

    The encoder takes Whisper's 30 s windows of 80 mel bins (3000 frames, 1500 positions after
    its strided convolution); the decoder reads up to 24 tokens. ``generate`` works offline
    with language detection (``en``, ``fr``), ``task="transcribe"`` or ``"translate"``.
    """
    tokenizer = _whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    end = ids("<|endoftext|>")
    start = ids("<|startoftranscript|>")
    feature_extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    processor = transformers.WhisperProcessor(
        feature_extractor=feature_extractor, tokenizer=tokenizer
    )
    torch.manual_seed(seed)
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=8,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        max_source_positions=1500,
        max_target_positions=_WHISPER_TARGET_POSITIONS,
        **_ends(end),
        decoder_start_token_id=start,
        init_std=1.0,
        begin_suppress_tokens=[ids(byte_symbols()[ord(" ")]), end],
        suppress_tokens=[],
    )
    model = transformers.WhisperForConditionalGeneration(config)
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=start,
        **_ends(end),
        max_length=_WHISPER_TARGET_POSITIONS,
        begin_suppress_tokens=[ids(byte_symbols()[ord(" ")]), end],
        suppress_tokens=[],
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in WHISPER_LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
    )
    return save(directory, model, processor)


def _chat_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges and the role markers as special tokens."""
    symbols = byte_symbols()
    specials = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    model = tokenizers.models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[])
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    backend.add_special_tokens(specials)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
        model_max_length=LM_CONTEXT,
    )


def build_tiny_causal_lm(
    directory: Path, *, seed: int = 0, chat_template: str | None = CHAT_TEMPLATE
) -> Path:
    """Saves a tiny random GPT-2 style chat model (model, tokenizer with a chat template) into
    ``directory`` (created) and returns it.

    Args:
        directory: where to save it.
        seed: the weights' seed.
        chat_template: the tokenizer's chat template (Jinja); None saves none.
    """
    tokenizer = _chat_tokenizer()
    tokenizer.chat_template = chat_template
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=LM_CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=2,
        **_ends(end),
    )
    model = transformers.GPT2LMHeadModel(config)
    model.generation_config = transformers.GenerationConfig(**_ends(end))
    return save(directory, model, tokenizer)
