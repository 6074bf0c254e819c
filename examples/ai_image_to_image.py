"""Changes a picture as a prompt says through an lpstream gateway (go-livepeer's
``/image-to-image``).

Start a node that serves an image-to-image model first, e.g.

    lpstream dev --ai-models examples/ai-models.json

then

    python examples/ai_image_to_image.py --image photo.jpg "as a watercolour" --out out.png

The picture goes up as a ``multipart/form-data`` form (file field ``image``, the other fields
as text), as go-livepeer takes it; the answer holds each picture as a PNG data URL with the
seed it was made with. ``--strength`` (0 to 1) is how far it may move from the original.
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import struct
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any


def post_form(url: str, fields: dict[str, str], files: dict[str, Path], token: str | None) -> Any:
    """POSTs a multipart form; returns the JSON answer (or exits with the error)."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value.encode() + b"\r\n"
    for name, path in files.items():
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{path.name}"\r\nContent-Type: {kind}\r\n\r\n'
        ).encode()
        body += path.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        sys.exit(f"{url}: {error.code} {error.read().decode(errors='replace')}")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--image", type=Path, required=True, help="the picture to change")
    parser.add_argument("--gateway", default="http://127.0.0.1:8935")
    parser.add_argument("--model", default="", help="model id (default: the only one offered)")
    parser.add_argument("--token", help="the gateway's API token (sent as a Bearer token)")
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=25, help="num_inference_steps")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--seed", type=int, help="default: a random one, printed")
    parser.add_argument("--out", type=Path, default=Path("changed.png"))
    args = parser.parse_args()

    fields = {
        "prompt": args.prompt,
        "strength": str(args.strength),
        "num_inference_steps": str(args.steps),
        "guidance_scale": str(args.guidance_scale),
    }
    if args.model:
        fields["model_id"] = args.model
    if args.seed is not None:
        fields["seed"] = str(args.seed)
    answer = post_form(f"{args.gateway}/image-to-image", fields, {"image": args.image}, args.token)
    image = answer["images"][0]
    png = base64.b64decode(image["url"].partition(",")[2])
    args.out.write_bytes(png)
    width, height = png_size(png)
    print(f"wrote {args.out} ({width}x{height}, seed {image['seed']})")


if __name__ == "__main__":
    main()
