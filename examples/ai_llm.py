"""Asks a language model through an lpstream gateway (go-livepeer's ``/llm``) and prints the
answer as it is generated.

Start a node that serves an LLM first, e.g.

    lpstream dev --ai-models examples/ai-models.json

then

    python examples/ai_llm.py "Why is the sky blue?" --system "Answer in one sentence."

The request is ai-worker's ``LLMRequest`` with ``stream: true``: the answer comes back as
server-sent events, one per piece of text, printed as it arrives; the finish reason and the
tokens you paid for (prompt and completion) go to stderr at the end. ``--temperature 0`` is
greedy decoding; with ``--seed`` sampling gives the same answer again. Only the standard
library is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


def events(url: str, document: dict[str, object], token: str | None) -> Iterator[Any]:
    """POSTs ``document`` and yields each server-sent event's JSON as it arrives."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(document).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            for line in response:  # the body arrives line by line, as it is sent
                data = line.decode().strip()
                if not data.startswith("data:"):
                    continue
                data = data.removeprefix("data:").strip()
                if data == "[DONE]":
                    return
                yield json.loads(data)
    except urllib.error.HTTPError as error:
        sys.exit(f"{url}: {error.code} {error.read().decode(errors='replace')}")


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
    args = parser.parse_args()

    messages = [{"role": "user", "content": args.prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    request: dict[str, object] = {
        "messages": messages,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
    }
    if args.model:
        request["model"] = args.model
    if args.seed is not None:
        request["seed"] = args.seed
    start = time.monotonic()
    first = None
    pieces = 0
    for event in events(f"{args.gateway}/llm", request, args.token):
        if "detail" in event:  # an error after the stream began
            sys.exit(f"\nfailed: {event['detail']['msg']}")
        choice = event["choices"][0]
        text = choice["delta"].get("content", "")
        if text:
            first = first if first is not None else time.monotonic() - start
            pieces += 1
            print(text, end="", flush=True)
        if choice["finish_reason"]:
            usage = event["usage"]
            print()
            print(
                f"finish: {choice['finish_reason']}; tokens: {usage['prompt_tokens']} prompt, "
                f"{usage['completion_tokens']} completion; {pieces} pieces, the first after "
                f"{first or 0:.3f} s",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
