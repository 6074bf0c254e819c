"""Chats with a model through an lpstream gateway with OpenAI's own Python client, streamed.

Start a node that serves an LLM first, e.g.

    lpstream dev --ai-models examples/ai-models.json

then (``pip install openai``)

    python examples/ai_openai_chat.py "Write a haiku about rivers."

The gateway answers OpenAI's ``POST /v1/chat/completions`` and ``GET /v1/models``, so any
OpenAI client works with ``base_url`` set to the gateway's ``/v1`` and the gateway's API token
as its key (a node without API tokens serves loopback clients with any key). Each piece of
text is printed as it arrives; the finish reason and the tokens paid for go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--system", help="a system message before the prompt")
    parser.add_argument("--gateway", default="http://127.0.0.1:8935")
    parser.add_argument("--model", default="", help="model id (default: the only one offered)")
    parser.add_argument("--token", help="the gateway's API token (sent as a Bearer token)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, help="sampling seed (default: a random one)")
    parser.add_argument("--list-models", action="store_true", help="list the models and exit")
    args = parser.parse_args()

    client = OpenAI(base_url=f"{args.gateway}/v1", api_key=args.token or "none")
    if args.list_models:
        for model in client.models.list():
            print(model.id)
        return
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": args.prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    start = time.monotonic()
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        stream=True,
        stream_options={"include_usage": True},
    )
    first = None
    pieces = 0
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                first = first if first is not None else time.monotonic() - start
                pieces += 1
                print(choice.delta.content, end="", flush=True)
            finish = choice.finish_reason or finish
        if chunk.usage is not None:  # the last chunk: what was paid for
            print()
            print(
                f"finish: {finish}; tokens: {chunk.usage.prompt_tokens} prompt, "
                f"{chunk.usage.completion_tokens} completion; {pieces} pieces, the first after "
                f"{first or 0:.3f} s",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
