"""Makes pictures from a prompt through an lpstream gateway (go-livepeer's ``/text-to-image``).

Start a node that serves a text-to-image model first, e.g.

    lpstream dev --ai-models examples/ai-models.json

then

    python examples/ai_text_to_image.py "a lighthouse at dusk" --width 512 --height 512 \
        --out lighthouse.png

The answer holds each picture as a PNG data URL with the seed it was made with (picture i:
seed + i); they are written to ``--out`` (``name-1.png``, ``name-2.png``... past the first)
and the seed is printed, so ``--seed`` makes the same picture again. Only the standard library
is used.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def post_json(url: str, document: dict[str, object], token: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(document).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        sys.exit(f"{url}: {error.code} {error.read().decode(errors='replace')}")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def output_path(out: Path, index: int) -> Path:
    return out if index == 0 else out.with_name(f"{out.stem}-{index}{out.suffix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--gateway", default="http://127.0.0.1:8935")
    parser.add_argument("--model", default="", help="model id (default: the only one offered)")
    parser.add_argument("--token", help="the gateway's API token (sent as a Bearer token)")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25, help="num_inference_steps")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--seed", type=int, help="default: a random one, printed")
    parser.add_argument("--count", type=int, default=1, help="num_images_per_prompt")
    parser.add_argument("--out", type=Path, default=Path("picture.png"))
    args = parser.parse_args()

    request: dict[str, object] = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "width": args.width,
        "height": args.height,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "num_images_per_prompt": args.count,
    }
    if args.model:
        request["model_id"] = args.model
    if args.seed is not None:
        request["seed"] = args.seed
    answer = post_json(f"{args.gateway}/text-to-image", request, args.token)
    for index, image in enumerate(answer["images"]):
        png = base64.b64decode(image["url"].partition(",")[2])
        path = output_path(args.out, index)
        path.write_bytes(png)
        width, height = png_size(png)
        print(f"wrote {path} ({width}x{height}, seed {image['seed']})")


if __name__ == "__main__":
    main()
