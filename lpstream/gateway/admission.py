"""Publish admission: may this publisher take this stream name, and what comes with it.

How this works (``Gateway.start_publish`` calls it for every RTMP and WHIP publish, and for
SRT once it exists: the ingest edge hands what the client presented as a ``PublishAttempt``):

1. :meth:`PublishAdmission.authorize` turns the attempt into the access layer's
   ``PublishRequest`` and asks ``PublishAuthorizer.authorize`` (webhook, publish keys, JWT, or
   nobody) under one deadline: the webhook's timeout and a margin. A refusal, or no decision
   in time, raises ``ProtocolError`` with the refusal's status (401, 403, 503) and reason;
   nothing was set up or paid for. The ``Grant`` names the publisher's identity (the
   identity the stream limits and the fair share count) and may set the stream's profiles,
   a live AI pipeline, recording and a spend limit.
2. :meth:`PublishAdmission.claim` takes the name for that identity (``NameRegistry``) as the
   last step before the stream starts: within ``--name-grace`` of its publisher dropping, a
   name is refused to anyone else, with the time left. Without publish authorization names
   are first come, first served (the gateway refuses a live name itself).
3. :meth:`PublishAdmission.release` when the stream ends starts the grace.
"""

from __future__ import annotations

import math

import attrs
import trio

from ingest.rtmp.server import PublishAttempt
from lpstream.access import NameRegistry, PublishAuthorizer, PublishRequest, Refusal
from lpstream.access.values import Grant, PublishProtocol
from lpstream.errors import ProtocolError

__all__ = ["DECISION_MARGIN", "PublishAdmission", "publish_request"]

DECISION_MARGIN = 1.0
"""Seconds a decision may take beyond the webhook's timeout (a JWKS URL, the hook's body)."""

_PROTOCOLS: dict[str, PublishProtocol] = {"rtmp": "rtmp", "whip": "whip", "srt": "srt"}


def publish_request(stream: str, attempt: PublishAttempt, remote_addr: str) -> PublishRequest:
    """The access layer's request for ``attempt`` to publish ``stream``.

    Raises:
        ProtocolError: 400, an ingest protocol access control does not know.
    """
    protocol = _PROTOCOLS.get(attempt.protocol)
    if protocol is None:
        raise ProtocolError(f"publishing over {attempt.protocol!r} is not known", code=400)
    if protocol == "rtmp":
        return PublishRequest.from_rtmp(
            tc_url=attempt.url,
            app=attempt.app,
            publish_name=attempt.name or stream,
            remote_addr=remote_addr,
        )
    return PublishRequest(
        stream=stream,
        protocol=protocol,
        url=attempt.url,
        query=attempt.query,
        remote_addr=remote_addr,
        bearer=attempt.bearer,
    )


@attrs.define
class PublishAdmission:
    """Publish authorization and name ownership for the gateway (see the module comment)."""

    authorizer: PublishAuthorizer
    """Decides every publish."""
    names: NameRegistry
    """Who owns which stream name (kept while publish authorization is on)."""
    deadline: float = 2.0 + DECISION_MARGIN
    """Seconds a decision may take."""

    async def authorize(
        self, stream: str, attempt: PublishAttempt | None, remote_addr: str
    ) -> Grant:
        """The grant of ``attempt`` (with no attempt: what its address alone is granted).

        Raises:
            ProtocolError: refused (401, 403; 503 when no decision came in time).
        """
        request = publish_request(
            stream, attempt or PublishAttempt(protocol="rtmp", name=stream), remote_addr
        )
        decision: Grant | Refusal | None = None
        with trio.move_on_after(self.deadline):
            decision = await self.authorizer.authorize(request)
        if decision is None:
            raise ProtocolError(
                f"no publish decision within {self.deadline:g} s; try again", code=503
            )
        if isinstance(decision, Refusal):
            raise ProtocolError(f"not authorized: {decision.reason}", code=decision.status)
        return decision

    def claim(self, stream: str, identity: str) -> None:
        """Takes ``stream``'s name for ``identity``.

        Raises:
            ProtocolError: 403, the name is another publisher's (live, or within its grace).
        """
        now = trio.current_time()
        if self.names.claim(stream, identity, now=now):
            return
        left = self.names.held_for(stream, now=now)
        if left is None:
            raise ProtocolError(f"stream {stream!r} is live from another publisher", code=403)
        raise ProtocolError(
            f"stream name {stream!r} is kept for its publisher for {math.ceil(left)} s more "
            "(--name-grace); publish it with the same key or token, or later",
            code=403,
        )

    def release(self, stream: str, identity: str) -> None:
        """``identity``'s publish of ``stream`` ended."""
        self.names.release(stream, identity, now=trio.current_time())
