"""Transcribes speech in an audio file through an lpstream gateway (go-livepeer's
``/audio-to-text``, a Whisper model).

Start a node that serves an audio-to-text model first, e.g.

    lpstream dev --ai-models examples/ai-models.json

then

    python examples/ai_audio_to_text.py --audio interview.mp3 --out interview.json

Any file FFmpeg reads goes (wav, mp3, flac, ogg, m4a...), up as a ``multipart/form-data`` form
(file field ``audio``); you pay for its milliseconds. The text is printed, then each chunk
with its start and end in seconds (``--no-timestamps``: no chunks); ``--out`` keeps the whole
answer as JSON. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, required=True, help="the audio file")
    parser.add_argument("--gateway", default="http://127.0.0.1:8935")
    parser.add_argument("--model", default="", help="model id (default: the only one offered)")
    parser.add_argument("--token", help="the gateway's API token (sent as a Bearer token)")
    parser.add_argument(
        "--no-timestamps", action="store_true", help="the text only, no timed chunks"
    )
    parser.add_argument("--out", type=Path, help="write the whole answer here as JSON")
    args = parser.parse_args()

    fields = {"return_timestamps": "false" if args.no_timestamps else "true"}
    if args.model:
        fields["model_id"] = args.model
    answer = post_form(f"{args.gateway}/audio-to-text", fields, {"audio": args.audio}, args.token)
    if args.out:
        args.out.write_text(json.dumps(answer, ensure_ascii=False, indent=2) + "\n")
    print(answer["text"])
    for chunk in answer["chunks"]:
        start, end = chunk["timestamp"]
        until = "..." if end is None else f"{end:.2f}"
        print(f"[{start:.2f} - {until}] {chunk['text']}")


if __name__ == "__main__":
    main()
