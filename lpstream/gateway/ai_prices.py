"""The most a gateway pays for batch AI: ``--max-price-per-capability``.

The value is go-livepeer's ``-maxPricePerCapability`` JSON, given inline or as a file path::

    {"capabilities_prices": [
        {"pipeline": "text-to-image", "model_id": "default", "price_per_unit": 10,
         "pixels_per_unit": 1},
        {"pipeline": "llm", "model_id": "org/model", "price_per_unit": 2000000}
    ]}

``model_id`` ``default`` (or absent) sets the limit for every model of the pipeline; a model's
own entry wins over it. A price is read as an ``--ai-models`` entry's is
(``workers.batch.wei_price``): whole wei for ``pixels_per_unit`` units (default 1); go-livepeer's
currencies (``USD``) need a price feed this node does not have, and are refused saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs

from lpstream.errors import ConfigError
from workers.batch import wei_price

__all__ = ["DEFAULT_MODEL", "AiPriceLimits", "parse_max_prices"]

DEFAULT_MODEL = "default"
"""The ``model_id`` whose limit covers every model of a pipeline."""

MAX_FILE_SIZE = 1024 * 1024


@attrs.frozen
class AiPriceLimits:
    """Wei per unit the gateway pays at most, by (capability, model id)."""

    limits: Mapping[tuple[str, str], Fraction] = attrs.Factory(dict)

    def limit(self, capability: str, model_id: str) -> Fraction | None:
        """The most it pays per unit of ``model_id``; None: no limit."""
        found = self.limits.get((capability, model_id))
        if found is None:
            found = self.limits.get((capability, DEFAULT_MODEL))
        return found

    def allows(self, capability: str, model_id: str, price: Fraction) -> bool:
        limit = self.limit(capability, model_id)
        return limit is None or price <= limit


def parse_max_prices(text: str | None, flag: str = "--max-price-per-capability") -> AiPriceLimits:
    """The limits ``text`` sets: inline JSON, or the path of a JSON file; none for None.

    Raises:
        ConfigError: unreadable, not JSON, or an entry that does not fit (naming it).
    """
    if text is None or not text.strip():
        return AiPriceLimits()
    source = text.strip()
    if not source.startswith("{"):
        path = Path(source)
        try:
            if path.stat().st_size > MAX_FILE_SIZE:
                raise ConfigError(f"{flag}: {path} is over {MAX_FILE_SIZE} bytes")
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        document: Any = json.loads(source)
    except ValueError as exc:
        raise ConfigError(f"{flag}: not JSON: {exc}") from None
    entries = document.get("capabilities_prices") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{flag}: expected {{"capabilities_prices": [...]}}')
    limits: dict[tuple[str, str], Fraction] = {}
    for index, entry in enumerate(entries):
        where = f"{flag}: capabilities_prices[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object")
        pipeline = entry.get("pipeline")
        if not isinstance(pipeline, str) or not pipeline:
            raise ConfigError(f"{where}: 'pipeline' must name a capability")
        model_id = entry.get("model_id", DEFAULT_MODEL) or DEFAULT_MODEL
        if not isinstance(model_id, str):
            raise ConfigError(f"{where}: 'model_id' must be a string")
        price, per = wei_price(entry, where)  # AiModelsError: a ConfigError
        key = (pipeline, model_id)
        if key in limits:
            raise ConfigError(f"{where}: {pipeline} {model_id} is listed twice")
        limits[key] = Fraction(price, per)
    return AiPriceLimits(limits)
