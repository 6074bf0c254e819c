"""``--max-price-per-capability``: go-livepeer's JSON, inline or a file, read as a models
file's prices are; every refusal names the entry."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from lpstream.errors import ConfigError
from lpstream.gateway.ai_prices import parse_max_prices


def test_limits_per_model_and_per_pipeline_inline_or_from_a_file(tmp_path: Path) -> None:
    document = {
        "capabilities_prices": [
            {"pipeline": "llm", "model_id": "default", "price_per_unit": 1000},
            {
                "pipeline": "llm",
                "model_id": "org/big",
                "price_per_unit": "3000",
                "pixels_per_unit": 2,
            },
            {"pipeline": "text-to-image", "price_per_unit": 7, "currency": "WEI"},
        ]
    }
    file = tmp_path / "prices.json"
    file.write_text(json.dumps(document))
    for source in (json.dumps(document), str(file)):
        limits = parse_max_prices(source)
        assert limits.limit("llm", "org/big") == Fraction(1500)
        assert limits.limit("llm", "org/small") == 1000  # the pipeline's default
        assert limits.limit("text-to-image", "any") == 7
        assert limits.limit("upscale", "any") is None  # not listed: no limit
        assert limits.allows("llm", "org/small", Fraction(1000))
        assert not limits.allows("llm", "org/small", Fraction(1001))
    assert parse_max_prices(None).limit("llm", "x") is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{not json", "not JSON"),
        ('{"prices": []}', "capabilities_prices"),
        ('{"capabilities_prices": [7]}', r"capabilities_prices\[0\]: expected an object"),
        ('{"capabilities_prices": [{"price_per_unit": 1}]}', "'pipeline' must name"),
        (
            '{"capabilities_prices": [{"pipeline": "llm", "price_per_unit": "0.5USD"}]}',
            "only prices in wei",
        ),
        (
            '{"capabilities_prices": [{"pipeline": "llm", "currency": "USD"}]}',
            "only prices in wei",
        ),
        (
            '{"capabilities_prices": [{"pipeline": "llm", "pixels_per_unit": 0}]}',
            "pixels_per_unit",
        ),
        (
            '{"capabilities_prices": [{"pipeline": "llm"}, {"pipeline": "llm"}]}',
            "listed twice",
        ),
        ("/no/such/file.json", "cannot read"),
    ],
)
def test_a_bad_value_is_refused_naming_what_is_wrong(source: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_max_prices(source)


def test_the_gateway_refuses_to_start_with_a_bad_value() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lpstream",
            "dev",
            "--offchain",
            "--rtmp-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--service-addr=127.0.0.1:0",
            "--max-price-per-capability="
            '{"capabilities_prices": [{"pipeline": "llm", "currency": "USD"}]}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "only prices in wei are taken" in proc.stderr
