"""Configuration: flags, ``LPSTREAM_*`` variables and a TOML file, through the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lpstream.config import (
    MASK,
    Config,
    HostPort,
    HttpSection,
    LimitsSection,
    PlaybackSection,
    dump_toml,
    parse_bitrate,
    parse_byte_size,
    parse_pixels,
    read_config_file,
)
from lpstream.config.values import bitrate_text, memory_budget_text, pixels_text
from lpstream.errors import ConfigError
from lpstream.gateway.ingest_limits import IngestLimits
from lpstream.http.limits import HttpLimits
from lpstream.role_settings import http_limits, ingest_limits

ROOT = Path(__file__).resolve().parents[2]
LPSTREAM = [sys.executable, "-m", "lpstream"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LPSTREAM_")}
    return subprocess.run(
        [*LPSTREAM, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=ROOT,
        check=False,
    )


def shown(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``lpstream config show``'s output, read back as TOML."""
    result = run("config", "show", *args, env=env)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('max-ingest-bitrate = "8M"\ncapacity = 3\n[ingest]\nsegment-duration = 3\n')
    env = {"LPSTREAM_CAPACITY": "5", "LPSTREAM_MAX_INGEST_BITRATE": "9M"}
    config = shown("--config", str(file), "--max-ingest-bitrate", "10M", env=env)
    assert config["limits"]["max-ingest-bitrate"] == "10M"  # the flag
    assert config["worker"]["capacity"] == 5  # the environment
    assert config["ingest"]["segment-duration"] == 3.0  # the file
    assert config["http"]["http-body-timeout"] == 10.0  # the default
    # The file may come from the environment too.
    assert shown(env={"LPSTREAM_CONFIG": str(file)})["worker"]["capacity"] == 3


def test_config_show_masks_every_secret_from_every_source(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('[access]\nwhep-token = "from-the-file"\n')
    result = run(
        "config",
        "show",
        "--config",
        str(file),
        "--whip-token",
        "from-a-flag",
        env={"LPSTREAM_ORCH_SECRET": "from-the-env"},
    )
    assert result.returncode == 0, result.stderr
    for secret in ("from-the-file", "from-a-flag", "from-the-env"):
        assert secret not in result.stdout
    config = tomllib.loads(result.stdout)
    masked = {key for key, value in config["access"].items() if value == MASK}
    assert masked == {"whip-token", "whep-token"}  # the secrets that are set, and only those
    assert config["orchestrator"]["orch-secret"] == MASK


def test_each_command_shows_its_own_defaults_where_they_differ_on_purpose() -> None:
    dev, gateway = shown("--role", "dev"), shown("--role", "gateway")
    assert dev["worker"]["capacity"] == 4 and gateway["worker"]["capacity"] == 2
    assert dev["payments"]["price-per-unit"] == 1 and gateway["payments"]["price-per-unit"] == 0
    orchestrator = shown("--role", "orchestrator")
    assert "http-addr" not in orchestrator["http"]  # off unless given
    assert gateway["http"]["http-addr"] == "127.0.0.1:8935"


def test_the_example_file_is_accepted_and_what_config_show_prints_reads_back(
    tmp_path: Path,
) -> None:
    example = ROOT / "examples" / "lpstream.toml"
    result = run("config", "show", "--config", str(example))
    assert result.returncode == 0, result.stderr
    config = tomllib.loads(result.stdout)
    assert config["limits"]["max-ingest-bitrate"] == "20M"
    assert config["limits"]["max-ingest-pixels"] == "1920x1080"
    assert config["selection"]["orch-addr"] == ["127.0.0.1:8936"]
    assert config["payments"]["offchain"] is True
    again = tmp_path / "shown.toml"
    again.write_text(result.stdout)
    assert run("config", "show", "--config", str(again)).stdout == result.stdout


def test_an_unknown_key_is_an_error_naming_it_and_the_nearest_key(tmp_path: Path) -> None:
    file = tmp_path / "typo.toml"
    file.write_text('max-ingest-bitrat = "8M"\n')
    result = run("dev", "--offchain", "--config", str(file))
    assert result.returncode == 2
    assert "unknown key 'max-ingest-bitrat'" in result.stderr
    assert "did you mean 'max-ingest-bitrate'?" in result.stderr
    file.write_text("[http]\ncapacity = 2\n")
    result = run("config", "show", "--config", str(file))
    assert result.returncode == 2 and "'capacity' belongs in [worker]" in result.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('capacity = "lots"', "capacity: 'lots' is not a valid integer range"),
        ('max-ingest-bitrate = "fast"', "max-ingest-bitrate: --max-ingest-bitrate: cannot read"),
        ('rtmp-addr = "127.0.0.1:99999"', "rtmp-addr: --rtmp-addr: port 99999 out of range"),
        ('log-level = "loud"', "log-level: 'loud' is not one of"),
        ("offchain = 3", "offchain: "),
    ],
)
def test_a_bad_value_in_the_file_is_an_error_naming_the_file_and_its_key(
    tmp_path: Path, line: str, message: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(line + "\n")
    for command in (["config", "show"], ["dev", "--offchain"]):
        result = run(*command, "--config", str(file))
        assert result.returncode == 2
        assert f"{file}: {message}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_file_that_is_not_toml_is_a_clear_error(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text("capacity = \n")
    with pytest.raises(ConfigError, match="not TOML"):
        read_config_file(file)
    with pytest.raises(ConfigError, match="twice"):
        file.write_text("capacity = 2\n[worker]\ncapacity = 3\n")
        read_config_file(file)


def _find(tree: Any, key: str) -> Iterator[Any]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _find(item, key)


def test_a_config_file_drives_a_dev_node(tmp_path: Path) -> None:
    file = tmp_path / "dev.toml"
    file.write_text(
        "offchain = true\n"
        'rtmp-addr = "127.0.0.2:0"\n'
        '[http]\nhttp-addr = "127.0.0.1:0"\nhttp-max-connections = 100\n'
        '[orchestrator]\nservice-addr = "127.0.0.1:0"\n'
        '[limits]\nmemory-budget = "3G"\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LPSTREAM_")}
    node = subprocess.Popen(
        [*LPSTREAM, "dev", "--config", str(file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean,
    )
    try:
        assert node.stdout is not None
        lines = []
        for line in node.stdout:
            lines.append(line)
            if "lpstream dev ready" in line:
                break
        announced = "".join(lines)
        assert "ingest:   rtmp://127.0.0.2:" in announced, announced
        status_url = next(line.split()[-1] for line in lines if line.startswith("status:"))
        with urllib.request.urlopen(status_url, timeout=10) as reply:
            status = json.load(reply)
    finally:
        node.terminate()
        node.communicate(timeout=20)
    assert 3 * 2**30 in list(_find(status, "budget")), status
    assert 100 in list(_find(status, "max_connections")), status


def test_the_sections_state_the_defaults_the_parts_they_build_have() -> None:
    """One default per thing: the HTTP and ingest budgets built from default sections are
    the budgets' own defaults."""
    assert http_limits(HttpSection()) == HttpLimits()
    assert ingest_limits(Config()) == IngestLimits()
    assert PlaybackSection().part_target == 0.2
    assert LimitsSection().memory_budget is None  # auto: resolved against the machine


def test_repeated_and_structured_flags_read_back_from_what_config_show_prints(
    tmp_path: Path,
) -> None:
    config = shown(
        "--pipeline-price",
        "a=5",
        "--pipeline-price",
        "b=7",
        "--orch-addr",
        "127.0.0.1:1,127.0.0.2",
        "--pipeline-params",
        '{"strength": 0.5}',
        "--memory-budget",
        "3G",
    )
    assert config["payments"]["pipeline-price"] == ["a=5", "b=7"]
    assert config["selection"]["orch-addr"] == ["127.0.0.1:1", "127.0.0.2:8936"]
    assert json.loads(config["ai"]["pipeline-params"]) == {"strength": 0.5}
    assert config["limits"]["memory-budget"] == "3G"
    file = tmp_path / "again.toml"
    file.write_text(run("config", "show", "--pipeline-price", "a=5").stdout)
    assert read_config_file(file)["pipeline_price"] == ["a=5"]


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (parse_bitrate, bitrate_text, 60_000_000),
        (parse_bitrate, bitrate_text, 2_500_000),
        (parse_bitrate, bitrate_text, 1_234_567),
        (parse_pixels, pixels_text, 4096 * 2304),
        (parse_pixels, pixels_text, 1000 * 1000),
        (parse_byte_size, memory_budget_text, 3 * 2**30),
        (parse_byte_size, memory_budget_text, 1000),
    ],
)
def test_sizes_are_written_as_people_write_them_and_read_back(
    parse: Callable[..., int], text: Callable[[int], str | int], value: int
) -> None:
    assert parse(str(text(value))) == value


def test_sections_are_built_from_values_by_field_name() -> None:
    config = Config.from_values({"rtmp_addr": HostPort("0.0.0.0", 1935), "capacity": 8}, role="dev")
    assert config.ingest.rtmp_addr == HostPort("0.0.0.0", 1935)
    assert config.worker.capacity == 8
    assert config.payments.price_per_unit == 1 and config.payments.data_dir is None
    text = dump_toml(config)
    assert 'rtmp-addr = "0.0.0.0:1935"' in text and "capacity = 8" in text
