"""The ``lpstream`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mediatools import make_clip, probe_streams

LPSTREAM = [sys.executable, "-m", "lpstream"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LPSTREAM, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_transcode_writes_one_file_per_profile(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", seconds=2, size="1280x720", fmt="mp4")
    profiles = tmp_path / "ladder.json"
    profiles.write_text(
        json.dumps(
            [
                {
                    "name": "360p",
                    "width": 640,
                    "height": 360,
                    "bitrate": 400000,
                    "profile": "H264Main",
                },
                {"name": "180p", "width": 320, "height": 180, "bitrate": 150000, "fps": 15},
            ]
        )
    )
    out = tmp_path / "out"
    # The profiles file comes from the environment, as every flag can.
    result = run("transcode", str(source), "-o", str(out), env={"LPSTREAM_PROFILES": str(profiles)})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["180p.ts", "360p.ts"]
    video, audio = probe_streams(out / "360p.ts")
    assert video["size"] == (640, 360) and video["frames"] == 60 and audio["frames"]
    (video_180, _) = probe_streams(out / "180p.ts")
    assert video_180["size"] == (320, 180) and video_180["frames"] == 30
    assert "360p  640x360  60 frames" in result.stdout


def test_a_bad_profiles_file_is_a_clear_usage_error(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.ts", seconds=1, size="320x240", fmt="mpegts")
    profiles = tmp_path / "bad.json"
    profiles.write_text('[{"name": "x", "width": 640}]')
    result = run("transcode", str(source), "-o", str(tmp_path / "o"), "--profiles", str(profiles))
    assert result.returncode == 2
    assert "profile is missing 'height'" in result.stderr


def test_a_file_that_is_not_media_fails_with_a_message(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ts"
    junk.write_bytes(os.urandom(50_000))
    result = run("transcode", str(junk), "-o", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


def test_a_paid_role_without_its_chain_flags_is_a_usage_error() -> None:
    for role in ("gateway", "orchestrator"):
        extra = ["--orch-addr=127.0.0.1:8936"] if role == "gateway" else ["--orch-secret=s"]
        result = run(role, *extra)
        assert result.returncode == 2
        assert "a paid node needs --eth-url, --controller, --keystore" in result.stderr
    result = run("gateway", "--offchain")
    assert result.returncode == 2 and "give --orch-addr or --orch-webhook-url" in result.stderr


def test_help_names_the_environment_variable_of_every_flag() -> None:
    for command in (
        "dev",
        "gateway",
        "orchestrator",
        "worker",
        "transcode",
        "chain",
        "config show",
    ):
        text = run(*command.split(), "--help").stdout
        # Option lines are indented two spaces; wrapped help text is indented further.
        flags = set(re.findall(r"^  (?:-\w, )?(--[a-z0-9-]+)", text, re.M))
        flags -= {"--help"}
        for flag in flags:
            env = "LPSTREAM_" + flag[2:].upper().replace("-", "_")
            assert env in text, f"{command} {flag} has no {env}"


def test_help_loads_no_chain_media_ai_or_server_library() -> None:
    """Each command imports what it runs when it runs: ``--help`` stays quick."""
    code = (
        "import sys\n"
        "from lpstream.cli import main\n"
        "for args in (['--help'], ['transcode', '--help'], ['dev', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('web3', 'eth_account', 'torch', 'aiortc', 'av', 'hypercorn', 'aioquic',"
        " 'starlette')\n"
        "print('loaded:', sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("loaded: []"), result.stdout[-500:]


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_a_node_stops_cleanly_on_a_signal_even_with_sigint_ignored(
    stop_with: signal.Signals,
) -> None:
    """Started in the background (SIGINT inherited as ignored) or by a service manager
    (SIGTERM), the node still stops in order and says so."""

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lpstream",
            "dev",
            "--offchain",
            "--rtmp-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--service-addr=127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint,
    )
    try:
        assert node.stdout is not None
        for line in node.stdout:
            if "lpstream dev ready" in line:
                break
        node.send_signal(stop_with)
        rest, _ = node.communicate(timeout=20)
    finally:
        node.kill()
    assert node.returncode == 0, rest
    assert f"{stop_with.name}: stopping" in rest and rest.rstrip().endswith("stopped")
