"""The settings of the market between nodes: which orchestrators a gateway uses, prices and
tickets, the chain, and the orchestrator's service."""

from __future__ import annotations

import attrs

from lpstream.config.setting import address_setting, setting
from lpstream.config.values import HostPort, parse_pipeline_price

__all__ = ["ChainSection", "OrchestratorSection", "PaymentsSection", "SelectionSection"]


def _orchestrator_addresses(text: str, flag: str) -> tuple[HostPort, ...]:
    # Imported here: the pin's module loads the QUIC stack, which `lpstream --help` must not.
    from lpstream.orchestrator.address import parse_service_addresses

    return parse_service_addresses(text, flag)


@attrs.frozen(kw_only=True)
class SelectionSection:
    """Which orchestrators a gateway uses."""

    orch_addr: tuple[HostPort, ...] = setting(
        (),
        "Orchestrator QUIC address (repeat, or separate with commas), pinned as "
        "quic://host:port#sha256=HEX (the orchestrator prints it at start). Without it and "
        "without --orch-webhook-url, a paid gateway uses the chain's active set.",
        kind=HostPort,
        parse=_orchestrator_addresses,
        show=lambda addrs: [str(a) for a in addrs],
        multiple=True,
    )
    orch_webhook_url: str | None = setting(
        None, 'Discovery webhook answering [{"address": "host:port", "score": 0.9}, ...].'
    )
    selection_stake_weight: float = setting(0.7, "Selection: stake.", kind=float, low=0)
    selection_price_weight: float = setting(0.0, "Selection: price.", kind=float, low=0)
    selection_random_weight: float = setting(0.3, "Selection: chance.", kind=float, low=0)
    selection_seed: int | None = setting(
        None,
        "Seed the selection draws (reproducible runs and tests); default: random.",
        kind=int,
    )


@attrs.frozen(kw_only=True)
class PaymentsSection:
    """Prices and tickets."""

    offchain: bool = setting(False, "Run without payments (no chain).", kind=bool)
    price_per_unit: int = setting(0, "Orchestrator price: wei per unit.", kind=int, low=0)
    pixels_per_unit: int = setting(1, "Pixels in a price unit.", kind=int, low=1)
    max_price_per_unit: int | None = setting(
        200_000,
        "Gateway: refuse orchestrators asking more wei per unit (--pixels-per-unit pixels) "
        "than this. The default, 200000 wei a pixel at the default unit, is about 2e12 wei "
        "(0.000002 ETH) a second for a 720p stream's default ladder; set a higher number to "
        "pay more (there is no unlimited).",
        kind=int,
        low=0,
    )
    max_price_per_capability: str | None = setting(
        None,
        "Gateway: the most it pays for batch AI, per capability and model: a JSON file, or "
        'inline JSON, in go-livepeer\'s shape {"capabilities_prices": [{"pipeline": '
        '"llm", "model_id": "default", "price_per_unit": 1000, '
        "\"pixels_per_unit\": 1}]} (model_id 'default': every model of the pipeline). A "
        "capability not listed has no limit.",
    )
    ticket_ev: int = setting(10**12, "Target EV per ticket, wei.", kind=int, low=1)
    max_face_value: int = setting(
        0,
        "Cap on a ticket's face value in wei (0: none); lower caps win more often.",
        kind=int,
        low=0,
    )
    price_per_second: int = setting(
        1_000_000_000_000,
        "Paid nodes: wei per second of a live AI session, for pipelines without their own "
        "--pipeline-price.",
        kind=int,
        low=0,
    )
    pipeline_price: tuple[tuple[str, int], ...] = setting(
        (),
        "Paid nodes: NAME=WEI, the price per second of one pipeline (repeat).",
        kind=tuple,
        parse=parse_pipeline_price,
        show=lambda prices: [f"{name}={wei}" for name, wei in prices],
        multiple=True,
    )
    max_price_per_second: int | None = setting(
        10**13,
        "Paid gateways: wei per second a live AI session may cost at most; orchestrators "
        "asking more for the pipeline are not used. The default, 1e13 wei (0.00001 ETH) a "
        "second, is 10x the default --price-per-second; set a higher number to pay more "
        "(there is no unlimited).",
        kind=int,
        low=0,
    )
    data_dir: str | None = setting(
        ".lpstream",
        "Where the node keeps its state: the winning-ticket queue (SQLite) and an "
        "orchestrator's QUIC key and certificate (quic-identity.pem).",
    )


@attrs.frozen(kw_only=True)
class ChainSection:
    """How a paid node reaches its chain (and, for ``dev``, the embedded chain's pace)."""

    eth_url: str | None = setting(None, "Ethereum JSON-RPC URL (e.g. from `lpstream chain`).")
    controller: str | None = setting(None, "Address of the protocol's Controller contract.")
    keystore: str | None = setting(None, "Encrypted JSON keystore of this node's Ethereum account.")
    passphrase_file: str | None = setting(
        None, "File holding the keystore passphrase (mode 0600); prompted for if absent."
    )
    block_time: float = setting(0.5, "Embedded chain: s/block.", kind=float, low=0.01, high=60)
    round_length: int = setting(
        100,
        "Embedded chain: blocks per round (more than the 40-block ticket expiry).",
        kind=int,
        low=45,
    )
    initialize_rounds: bool = setting(
        False, "Initialize each new round on chain as soon as it starts.", kind=bool
    )

    def missing(self) -> list[str]:
        """The flags a paid node needs that are not set."""
        given = {"--eth-url": self.eth_url, "--controller": self.controller}
        given["--keystore"] = self.keystore
        return [flag for flag, value in given.items() if not value]


@attrs.frozen(kw_only=True)
class OrchestratorSection:
    """The orchestrator's service and the secret its remote workers present."""

    service_addr: HostPort = address_setting(  # noqa: RUF009 (a field specifier)
        HostPort("127.0.0.1", 8936), "UDP address of the orchestrator's QUIC service."
    )
    orch_secret: str | None = setting(
        None, "Secret remote workers must present (dev: random if absent).", secret=True
    )
    worker_hello_backoff: float = setting(
        1.0,
        "Seconds before a wrong worker secret is answered; it doubles with each further one "
        "from the same address (an IPv6 /64), up to 60 s, and meanwhile that address's "
        "hellos are refused unread. 0: no back-off.",
        kind=float,
        low=0,
        high=60,
    )
