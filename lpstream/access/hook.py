"""The auth webhook (``--auth-webhook-url``): the operator's server says who may publish or
watch, go-livepeer's ``-authWebhookUrl`` contract.

How this works:

* The node POSTs JSON: for a publish ``{"stream", "protocol", "url", "query", "remote_addr"}``
  (go-livepeer sends ``url`` alone; the others are ours) plus ``"token"`` when the client gave
  a bearer token or stream key; for a play ``{"stream", "protocol": "hls" | "whep", "url",
  "remote_addr", "token"}``.
* A 2xx answer allows it. Its body is optional; a JSON object may set ``profiles`` (a list in
  go-livepeer's profile shape: ``name``, ``width``, ``height``, ``bitrate``, ``fps``,
  ``fpsDen``, ``profile``, ``gop``), ``pipeline`` and ``params`` (live AI), ``record`` (a
  boolean), ``spend_limit_wei`` (a whole number, or a string of one) and ``identity`` (who, for
  name ownership and spend limits; without it: a short hash of the token, else the client's
  address). go-livepeer's other fields (``manifestID``, ``streamKey``, ``presets``, ...) are
  read past; ``presets`` are go-livepeer's own ladder names and are not mapped to profiles.
  An answer that is not a JSON object, or sets one of our fields wrongly, refuses (503: the
  hook broke the contract, not the client).
* Any other status refuses: 401 stays 401, a 5xx is 503, the rest 403, with the hook's first
  line of text as the reason where it gave one. A timeout (``--auth-webhook-timeout``) or an
  unreachable hook refuses with 503. Answers are bounded (:mod:`lpstream.webhook`: 64 KiB,
  nesting 8).
* Decisions are remembered per (stream, protocol, token) and client address (a hook may
  decide by address) for ``--auth-webhook-cache`` seconds; only the hook's own answers are,
  not its being unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from lpstream.access.cache import DecisionCache, decision_key
from lpstream.access.values import Decision, Grant, ParamValue, Refusal, host_of
from lpstream.errors import ProtocolError
from lpstream.media import VideoProfile, check_stream_name
from lpstream.webhook import WebhookClient, WebhookError

__all__ = ["MAX_ANSWER_BYTES", "MAX_ANSWER_NESTING", "AuthWebhook", "grant_from_answer"]

log = logging.getLogger("lpstream.access")

MAX_ANSWER_BYTES = 64 * 1024
"""The largest answer read from the hook."""
MAX_ANSWER_NESTING = 8
"""Deepest nesting read in an answer (profiles and params need 3)."""
MAX_PROFILES = 16
"""Profiles an answer may set at most (as a profiles file)."""


def _profiles(raw: object) -> tuple[VideoProfile, ...]:
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_PROFILES:
        raise ValueError(f"profiles: a list of 1 to {MAX_PROFILES} profiles")
    profiles = []
    for entry in raw:
        if isinstance(entry, dict) and entry.get("fpsDen", 1) not in (0, 1, None):
            raise ValueError(f"profile {entry.get('name')!r}: fractional fps is not supported")
        profiles.append(VideoProfile.from_json(entry))
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ValueError("profiles: names must be unique")
    return tuple(profiles)


def _spend_limit(raw: object) -> int:
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 78:
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    raise ValueError("spend_limit_wei: a whole number of wei (or a string of one)")


def grant_from_answer(document: Any, *, identity: str) -> Grant:
    """The grant a 2xx answer gives (see the module comment); ``identity`` is who it is when
    the answer does not say.

    Raises:
        ValueError: the answer breaks the contract, saying how.
    """
    if document is None:
        return Grant(identity=identity)
    if not isinstance(document, dict):
        raise ValueError(f"the answer is a JSON {type(document).__name__}, not an object")
    named = document.get("identity")
    if named is not None:
        if not isinstance(named, str) or not 0 < len(named) <= 128 or not named.isprintable():
            raise ValueError("identity: a string of 1 to 128 printable characters")
        identity = named
    profiles = None if document.get("profiles") is None else _profiles(document["profiles"])
    pipeline = document.get("pipeline")
    if pipeline is not None and not isinstance(pipeline, str):
        raise ValueError("pipeline: a pipeline name")
    params: Mapping[str, ParamValue] = {}
    if document.get("params") is not None:
        # The one rule for pipeline parameters; imported when needed, as lpstream.http.ai
        # brings in the gateway's live AI session.
        from lpstream.http.ai import parse_params

        try:
            params = parse_params(document["params"])
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
    record = document.get("record", False)
    if not isinstance(record, bool):
        raise ValueError("record: true or false")
    limit = document.get("spend_limit_wei")
    return Grant(
        identity=identity,
        profiles=profiles,
        pipeline=pipeline or None,
        params=params,
        record=record,
        spend_limit_wei=None if limit is None else _spend_limit(limit),
    )


def _refusal_of(exc: WebhookError) -> Refusal:
    if exc.status is None:
        return Refusal(reason=f"no decision from the auth webhook: {exc.problem}", status=503)
    said = f": {exc.text}" if exc.text else ""
    if exc.status == 401:
        return Refusal(reason=f"refused by the auth webhook{said}", status=401)
    if exc.status >= 500:
        return Refusal(reason=f"the auth webhook failed (HTTP {exc.status}){said}", status=503)
    return Refusal(reason=f"refused by the auth webhook (HTTP {exc.status}){said}", status=403)


@attrs.define
class AuthWebhook:
    """Asks the hook and remembers its decisions (see the module comment)."""

    client: WebhookClient
    """The bounded client of ``--auth-webhook-url``."""
    cache: DecisionCache[bytes, Decision]
    """Decisions by (stream, protocol, token, client host) (:func:`.cache.decision_key`)."""

    @classmethod
    def from_url(cls, url: str, *, timeout: float, cache_seconds: float) -> AuthWebhook:
        """The hook at ``url``.

        Raises:
            ConfigError: ``url`` is not an http:// or https:// URL with a host.
        """
        client = WebhookClient(
            url, timeout=timeout, max_bytes=MAX_ANSWER_BYTES, max_nesting=MAX_ANSWER_NESTING
        )
        return cls(client=client, cache=DecisionCache(ttl=cache_seconds))

    async def decide(self, body: dict[str, Any], *, identity: str) -> Decision:
        """The hook's decision on ``body`` (its ``stream``, ``protocol`` and ``token`` are the
        cache key, with its ``remote_addr``'s host); ``identity`` is who it is when the answer
        does not say."""
        token = body.get("token")
        stream, protocol = str(body["stream"]), str(body["protocol"])
        key = decision_key(
            stream,
            protocol,
            None if token is None else str(token),
            host_of(str(body.get("remote_addr", ""))),
        )
        remembered = self.cache.get(key, now=trio.current_time())
        if remembered is not None:
            return remembered
        try:
            check_stream_name(stream)
            document = await self.client.post_json(body)
        except ValueError as exc:
            return Refusal(reason=str(exc), status=403)
        except WebhookError as exc:
            refusal = _refusal_of(exc)
            if exc.status is not None:
                self.cache.put(key, refusal, now=trio.current_time())
            log.info("auth webhook: %s %s refused: %s", protocol, stream, exc)
            return refusal
        try:
            decision: Decision = grant_from_answer(document, identity=identity)
        except ValueError as exc:
            log.warning("auth webhook: unusable answer for %s %s: %s", protocol, stream, exc)
            return Refusal(reason=f"the auth webhook's answer is unusable: {exc}", status=503)
        self.cache.put(key, decision, now=trio.current_time())
        return decision
