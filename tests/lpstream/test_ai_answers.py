"""Go-livepeer's AI routes and OpenAI's chat API, sans-IO: every answer's shape (ai-worker's
responses, OpenAI's chat.completion and its chunks, /v1/models, the error bodies)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lpstream.gateway.ai_answers import (
    ChatAnswer,
    TokenUsage,
    Track,
    image_response,
    livepeer_error,
    models_list,
    openai_error,
    sse_event,
    text_response,
)
from lpstream.gateway.ai_jobs import ModelOffer
from lpstream.gateway.ai_requests import AiRequestError


def as_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def offer(capability: str, model_id: str) -> ModelOffer:
    return ModelOffer(
        capability=capability,
        model_id=model_id,
        price_per_unit=10,
        pixels_per_unit=1,
        warm=True,
        orchestrators=2,
    )


def test_image_response_in_ai_workers_shape() -> None:
    tracks = [Track(name=f"image-{i}", data=bytes([i]) * 3) for i in (10, 2, 0, 1)]
    tracks.append(Track(name="other", data=b"x"))
    answer = image_response(tracks, seed=40)
    assert [image["seed"] for image in answer["images"]] == [40, 41, 42, 43]
    assert [image["nsfw"] for image in answer["images"]] == [False] * 4
    urls = [image["url"] for image in answer["images"]]
    assert all(url.startswith("data:image/png;base64,") for url in urls)
    assert [base64.b64decode(url.split(",", 1)[1]) for url in urls] == [
        bytes([i]) * 3 for i in (0, 1, 2, 10)
    ]


def test_text_response_in_ai_workers_shape() -> None:
    transcript = {"text": "hello there", "chunks": [{"timestamp": [0.0, 1.5], "text": "hello"}]}
    tracks = [Track(name="text", data=as_json({**transcript, "extra": 1}))]
    assert text_response(tracks) == transcript
    for bad in (b"not json", b'{"chunks": []}', b'{"text": "a", "chunks": [{"text": 1}]}'):
        with pytest.raises(AiRequestError) as error:
            text_response([Track(name="text", data=bad)])
        assert error.value.code == 502
    with pytest.raises(AiRequestError):
        text_response([])


USAGE = TokenUsage(prompt_tokens=12, completion_tokens=3)


def test_llm_answer_in_ai_workers_llm_response_shape() -> None:
    answer = ChatAnswer(id="chatcmpl-1", model="m", created=1700000000)
    assert answer.first_chunk() is None
    head = {"id": "chatcmpl-1", "model": "m", "created": 1700000000}
    assert answer.delta_chunk("Hel", 1) == {
        **head,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": ""}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
    }
    assert answer.last_chunks("length", USAGE) == [
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            "tokens_used": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
    ]
    assert answer.whole("Hello", "stop", USAGE) == {
        **head,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello"},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        "tokens_used": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def test_llm_answer_in_openais_shape() -> None:
    answer = ChatAnswer(id="chatcmpl-2", model="m", created=5, openai=True)
    whole = answer.whole("Hi", "length", USAGE)
    assert whole["object"] == "chat.completion"
    assert whole["choices"] == [
        {
            "index": 0,
            "finish_reason": "length",
            "message": {"role": "assistant", "content": "Hi", "refusal": None},
            "logprobs": None,
        }
    ]
    assert whole["usage"]["total_tokens"] == 15
    first = answer.first_chunk()
    assert first is not None and first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in first
    delta = answer.delta_chunk("H", 1)
    assert delta["choices"][0] == {
        "index": 0,
        "delta": {"content": "H"},
        "finish_reason": None,
        "logprobs": None,
    }
    [last] = answer.last_chunks("stop", USAGE)
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
    counted = ChatAnswer(id="c", model="m", created=5, openai=True, include_usage=True)
    assert counted.delta_chunk("H", 1)["usage"] is None
    finish, usage = counted.last_chunks("stop", USAGE)
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 12


def test_token_usage_from_the_llms_outputs() -> None:
    tracks = [
        Track(name="completion", data=b"hi", units=3),
        Track(name="prompt", data=b"", units=12),
        Track(name="finish", data=b"stop"),
    ]
    assert TokenUsage.from_tracks(tracks) == USAGE


def test_server_sent_event_framing() -> None:
    assert sse_event({"a": "ü\n"}) == b'data: {"a":"\\u00fc\\n"}\n\n'


def test_models_list_in_openais_shape() -> None:
    listed = models_list(
        [offer("llm", "z/lm"), offer("text-to-image", "a/sd"), offer("image-to-image", "a/sd")]
    )
    assert listed["object"] == "list"
    assert [(m["id"], m["object"], m["created"], m["owned_by"]) for m in listed["data"]] == [
        ("a/sd", "model", 0, "livepeer"),
        ("z/lm", "model", 0, "livepeer"),
    ]
    assert listed["data"][0]["capabilities"] == ["image-to-image", "text-to-image"]
    assert listed["data"][1]["offers"] == [
        {
            "capability": "llm",
            "price_per_unit": 10,
            "pixels_per_unit": 1,
            "warm": True,
            "orchestrators": 2,
        }
    ]
    assert models_list([]) == {"object": "list", "data": []}


def test_error_bodies() -> None:
    assert livepeer_error("no") == {"detail": {"msg": "no"}}
    assert openai_error("bad", 400, param="n") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": None}
    }
    assert openai_error("gone", 404, kind="model_not_found")["error"]["code"] == "model_not_found"
    assert openai_error("busy", 503)["error"]["type"] == "server_error"
    assert openai_error("who", 401)["error"]["type"] == "authentication_error"
