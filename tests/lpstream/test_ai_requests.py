"""Go-livepeer's AI routes and OpenAI's chat API, sans-IO: each route's body read into the
job its pipeline class checks, every refusal with its status, and the model chosen among
those offered."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from lpstream.gateway.ai_jobs import ModelOffer
from lpstream.gateway.ai_requests import (
    AI_ROUTES,
    CHAT_COMPLETIONS,
    MAX_IMAGE_BYTES,
    AiRequestError,
    ParsedAiRequest,
    choose_model,
    parse_ai_request,
)
from workers.batch import BatchRegistry, BatchRequest
from workers.batch.base import BatchPipeline

JSON = "application/json"
PICTURE = b"\x89PNG\r\n\x1a\n-not-decoded-here-"


def pipeline(capability: str) -> type[BatchPipeline]:
    return BatchRegistry().get(capability)


def parse(
    path: str, body: bytes, content_type: str | None = JSON, seed_rng: int = 7
) -> ParsedAiRequest:
    route = CHAT_COMPLETIONS if path == CHAT_COMPLETIONS.path else AI_ROUTES[path]
    spec = pipeline(route.capability).spec
    return parse_ai_request(route, content_type, body, spec, rng=random.Random(seed_rng))


def refused(path: str, body: bytes, content_type: str | None = JSON) -> AiRequestError:
    with pytest.raises(AiRequestError) as error:
        parse(path, body, content_type)
    return error.value


def as_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def form(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    """A form as browsers write it (boundary with dashes, files with a name and type)."""
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, data in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x"\r\n'
        out += head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_text_to_image_json_becomes_the_pipelines_params() -> None:
    body = {
        "model_id": "tiny/sd",
        "prompt": "a cat",
        "negative_prompt": "dogs",
        "width": 64,
        "height": 128,
        "guidance_scale": 2.5,
        "num_inference_steps": 3,
        "num_images_per_prompt": 2,
        "seed": 11,
        "safety_check": True,  # read and ignored: no safety checker runs
        "loras": "",
    }
    parsed = parse("/text-to-image", as_json(body))
    assert parsed.capability == "text-to-image" and parsed.model_id == "tiny/sd"
    assert dict(parsed.params) == {
        k: v for k, v in body.items() if k not in ("model_id", "safety_check", "loras")
    }
    assert parsed.input == b"" and not parsed.stream
    cls = pipeline("text-to-image")
    checked = cls.checked(BatchRequest(params=parsed.params))
    assert cls.quote(checked) == 64 * 128 * 2


def test_a_missing_seed_is_drawn_within_the_pipelines_bounds_and_kept() -> None:
    first = parse("/text-to-image", b'{"prompt": "a cat", "seed": null}', seed_rng=1)
    again = parse("/text-to-image", b'{"prompt": "a cat"}', seed_rng=1)
    other = parse("/text-to-image", b'{"prompt": "a cat"}', seed_rng=2)
    seed = first.params["seed"]
    assert isinstance(seed, int) and 0 <= seed <= 2**32 - 1
    assert again.params["seed"] == seed != other.params["seed"]
    body, content_type = form({}, {"audio": b"RIFF"})
    assert "seed" not in parse("/audio-to-text", body, content_type).params  # Whisper has none


def test_json_without_a_content_type_is_read_and_any_other_type_is_415() -> None:
    assert parse("/text-to-image", b'{"prompt": "a"}', None).params["prompt"] == "a"
    ok = parse("/text-to-image", b'{"prompt": "a"}', "application/json; charset=utf-8")
    assert ok.params["prompt"] == "a"
    wrong = refused("/text-to-image", b"prompt=a", "application/x-www-form-urlencoded")
    assert wrong.code == 415 and "application/json" in str(wrong)
    body, content_type = form({"prompt": "a"}, {})
    assert refused("/llm", body, content_type).code == 415


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"prompt": "a",', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[1, 2]", "a JSON object"),
        (b"[" * 100_000, "nested deeper than 16"),
        (b'{"a": ' * 17 + b"1" + b"}" * 17, "nested deeper than 16"),
        (b'{"prompt": "a", "colour": "red"}', "does not take 'colour'"),
        (b'{"prompt": "a", "loras": "{\\"x\\": 1.0}"}', "loras are not supported"),
        (b'{"prompt": "a", "width": [64]}', "width must be a string, number or boolean"),
        (b'{"prompt": "a", "model_id": 5}', "model_id must be a string"),
    ],
)
def test_malformed_or_unknown_json_is_400(body: bytes, said: str) -> None:
    error = refused("/text-to-image", body)
    assert error.code == 400 and said in str(error)


def test_brackets_in_strings_do_not_count_as_nesting() -> None:
    prompt = '[{"\\"' * 50 + "]]"
    parsed = parse("/text-to-image", as_json({"prompt": prompt, "seed": 1}))
    assert parsed.params["prompt"] == prompt
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    assert parse(CHAT_COMPLETIONS.path, as_json({"messages": messages})).input


def test_image_to_image_form_values_take_their_parameters_types() -> None:
    body, content_type = form(
        {
            "prompt": 'a cat; with "quotes" and ü',
            "model_id": "tiny/sd",
            "strength": "0.5",
            "guidance_scale": "3",
            "image_guidance_scale": "1.25",
            "num_inference_steps": "4",
            "num_images_per_prompt": "2",
            "seed": "99",
            "safety_check": "false",
            "loras": "",
        },
        {"image": PICTURE},
    )
    parsed = parse("/image-to-image", body, content_type)
    assert parsed.input == PICTURE and parsed.model_id == "tiny/sd"
    assert dict(parsed.params) == {
        "prompt": 'a cat; with "quotes" and ü',
        "strength": 0.5,
        "guidance_scale": 3.0,
        "image_guidance_scale": 1.25,
        "num_inference_steps": 4,
        "num_images_per_prompt": 2,
        "seed": 99,
    }


def test_upscale_and_audio_to_text_forms() -> None:
    body, content_type = form({"prompt": "sharper", "num_inference_steps": "2"}, {"image": b"P"})
    upscale = parse("/upscale", body, content_type)
    assert upscale.input == b"P" and upscale.params["num_inference_steps"] == 2
    assert set(upscale.params) == {"prompt", "num_inference_steps", "seed"}
    body, content_type = form(
        {"return_timestamps": "false", "metadata": '{"duration": 1}', "model_id": "w"},
        {"audio": b"RIFF...."},
    )
    audio = parse("/audio-to-text", body, content_type)
    assert (audio.input, audio.model_id) == (b"RIFF....", "w")
    assert dict(audio.params) == {"return_timestamps": "false"}


@pytest.mark.parametrize(
    ("fields", "files", "code", "said"),
    [
        ({"prompt": "a"}, {}, 400, "needs a file in the form field 'image'"),
        ({"prompt": "a"}, {"image": b""}, 400, "needs a file"),
        ({"prompt": "a", "strength": "lots"}, {"image": b"P"}, 400, "strength must be a number"),
        ({"prompt": "a", "seed": "1.5"}, {"image": b"P"}, 400, "seed must be a whole number"),
        ({"prompt": "a", "mask": "x"}, {"image": b"P"}, 400, "does not take 'mask'"),
        ({}, {"image": b"P", "picture": b"Q"}, 400, "does not take 'picture'"),
    ],
)
def test_bad_forms_are_refused(
    fields: dict[str, str], files: dict[str, bytes], code: int, said: str
) -> None:
    body, content_type = form(fields, files)
    error = refused("/image-to-image", body, content_type)
    assert error.code == code and said in str(error)


def test_form_refusals_of_the_transport() -> None:
    body, content_type = form({"prompt": "a"}, {"image": b"P"})
    unclosed = body[: body.rindex(b"--\r\n")] + b"\r\n"
    assert "closing delimiter" in str(refused("/image-to-image", unclosed, content_type))
    delimiter = body.split(b"\r\n", 1)[0]
    doubled = body.replace(
        delimiter + b"--",
        delimiter
        + b'\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nb\r\n'
        + delimiter
        + b"--",
    )
    assert "sent twice" in str(refused("/image-to-image", doubled, content_type))
    assert refused("/image-to-image", b"{}", JSON).code == 415
    assert refused("/upscale", body, "multipart/form-data").code == 400  # no boundary


def test_a_picture_over_the_file_limit_is_413_naming_it() -> None:
    body, content_type = form({"prompt": "a"}, {"image": b"x" * (MAX_IMAGE_BYTES + 1)})
    error = refused("/image-to-image", body, content_type)
    assert error.code == 413 and "max_file_bytes" in str(error)
    body, content_type = form({"prompt": "a"}, {"image": b"x" * MAX_IMAGE_BYTES})
    assert len(parse("/image-to-image", body, content_type).input) == MAX_IMAGE_BYTES


def test_llm_request_as_ai_worker_takes_it() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "héllo"},
        ],
        "model": "tiny/chat-lm",
        "temperature": 0,
        "max_tokens": 5,
        "top_p": 0.9,
        "top_k": 3,
        "stream": True,
    }
    parsed = parse("/llm", as_json(body))
    assert parsed.model_id == "tiny/chat-lm" and parsed.stream and not parsed.include_usage
    assert json.loads(parsed.input) == body["messages"]
    assert {k: parsed.params[k] for k in ("temperature", "max_tokens", "top_p", "top_k")} == {
        "temperature": 0,
        "max_tokens": 5,
        "top_p": 0.9,
        "top_k": 3,
    }
    assert isinstance(parsed.params["seed"], int)  # ours: reported, reproducible
    cls = pipeline("llm")
    checked = cls.checked(BatchRequest(params=parsed.params, input=parsed.input))
    assert cls.quote(checked) >= 5


@pytest.mark.parametrize(
    ("messages", "said"),
    [
        (None, "messages must be a non-empty list"),
        ([], "messages must be a non-empty list"),
        ("hi", "messages must be a non-empty list"),
        (["hi"], "messages[0] must be an object"),
        ([{"role": "tool", "content": "x"}], "messages[0].role must be"),
        ([{"role": "user"}], "messages[0].content must be a string"),
        ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], "content must be"),
        ([{"role": "user", "content": "x", "tool_calls": [1]}], "tool_calls is not supported"),
    ],
)
def test_malformed_messages_are_400(messages: object, said: str) -> None:
    error = refused("/llm", as_json({"messages": messages}))
    assert error.code == 400 and said in str(error)


def test_llm_fields_it_does_not_know_are_400() -> None:
    error = refused("/llm", as_json({"messages": [{"role": "user", "content": "x"}], "n": 2}))
    assert "does not take 'n'" in str(error)


def test_openai_chat_request() -> None:
    body = {
        "model": "tiny/chat-lm",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "ok", "name": "bot", "tool_calls": None},
        ],
        "max_completion_tokens": 7,
        "seed": 5,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "someone",
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "stop": None,
        "logprobs": False,
    }
    parsed = parse(CHAT_COMPLETIONS.path, as_json(body))
    assert parsed.stream and parsed.include_usage
    assert parsed.params == {"max_tokens": 7, "seed": 5}
    assert json.loads(parsed.input) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "ok"},
    ]


@pytest.mark.parametrize(
    ("extra", "said", "param"),
    [
        ({"n": 2}, "n is not supported here", "n"),
        ({"temperature": 1, "presence_penalty": 0.5}, "presence_penalty is not supported", None),
        ({"tools": [{"type": "function"}]}, "tools is not supported here", "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format is not supported", None),
        ({"max_tokens": 3, "max_completion_tokens": 4}, "differ", "max_completion_tokens"),
        ({"stream_options": {"include_usage": True}}, "only allowed when stream is true", None),
        ({"stream": True, "stream_options": {"x": 1}}, "takes include_usage only", None),
        ({"best_of": 2}, "Unrecognized request argument supplied: best_of", None),
        ({"stream": "yes"}, "stream must be true or false", "stream"),
    ],
)
def test_openai_fields_that_would_change_the_answer_are_400(
    extra: dict[str, Any], said: str, param: str | None
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    error = refused(CHAT_COMPLETIONS.path, as_json(body))
    assert error.code == 400 and said in str(error)
    if param is not None:
        assert error.param == param
    images = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    error = refused(CHAT_COMPLETIONS.path, as_json({"model": "m", "messages": [images]}))
    assert "only text content" in str(error)


def offer(capability: str, model_id: str) -> ModelOffer:
    return ModelOffer(
        capability=capability,
        model_id=model_id,
        price_per_unit=10,
        pixels_per_unit=1,
        warm=True,
        orchestrators=2,
    )


def test_the_model_is_the_one_asked_or_the_only_one_offered() -> None:
    offers = [offer("llm", "a/one"), offer("text-to-image", "b/sd"), offer("llm", "c/two")]
    assert choose_model("text-to-image", "", offers) == "b/sd"
    assert choose_model("llm", "c/two", offers) == "c/two"
    with pytest.raises(AiRequestError) as several:
        choose_model("llm", "", offers)
    assert several.value.code == 400 and "a/one, c/two" in str(several.value)
    with pytest.raises(AiRequestError) as unknown:
        choose_model("llm", "d/three", offers)
    assert unknown.value.code == 400 and unknown.value.kind == "model_not_found"
    assert "offered: a/one, c/two" in str(unknown.value)
    with pytest.raises(AiRequestError) as none:
        choose_model("upscale", "", offers)
    assert none.value.code == 503 and "no orchestrator offers upscale" in str(none.value)
