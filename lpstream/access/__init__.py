"""Access control: who may publish, who may watch, who may use the API.

* :class:`PublishAuthorizer` decides every publish (RTMP, WHIP, SRT) from an auth webhook,
  publish keys or JWTs (:mod:`.publish`); :class:`PlayAuthorizer` every play (HLS, WHEP) when
  ``--play-auth`` is on (:mod:`.play`). Both answer a :class:`Grant` or a :class:`Refusal`.
* :class:`NameRegistry` keeps a stream name its publisher's for a grace period after it drops.
* :class:`SecretSet` matches keys and API tokens in constant time.
* :class:`NodeAccess` is all of it, built from the configuration's ``access`` section.

The gateway calls, for a publish::

    decision = await access.publish.authorize(PublishRequest.from_rtmp(...))
    if isinstance(decision, Refusal): ...  # tell the client decision.reason, close
    if not access.names.claim(name, decision.identity, now=trio.current_time()): ...
    ...
    access.names.release(name, decision.identity, now=trio.current_time())  # at its end
"""

from lpstream.access.cache import DecisionCache
from lpstream.access.hook import AuthWebhook, grant_from_answer
from lpstream.access.jwks import JwksKeys, KeysUnavailable
from lpstream.access.keys import SecretSet, read_secret_file
from lpstream.access.names import DEFAULT_NAME_GRACE, NameRegistry
from lpstream.access.node_access import NodeAccess, check_cors_origin
from lpstream.access.play import PLAY_AUTH_MODES, PlayAuthMode, PlayAuthorizer
from lpstream.access.publish import PublishAuthorizer
from lpstream.access.tokens import PERMISSIONS_CLAIM, JwtPermission, JwtVerifier, VerifiedToken
from lpstream.access.values import (
    Decision,
    Grant,
    ParamValue,
    PlayProtocol,
    PlayRequest,
    PublishProtocol,
    PublishRequest,
    Refusal,
    identity_of,
    secret_identity,
)

__all__ = [
    "DEFAULT_NAME_GRACE",
    "PERMISSIONS_CLAIM",
    "PLAY_AUTH_MODES",
    "AuthWebhook",
    "Decision",
    "DecisionCache",
    "Grant",
    "JwksKeys",
    "JwtPermission",
    "JwtVerifier",
    "KeysUnavailable",
    "NameRegistry",
    "NodeAccess",
    "ParamValue",
    "PlayAuthMode",
    "PlayAuthorizer",
    "PlayProtocol",
    "PlayRequest",
    "PublishAuthorizer",
    "PublishProtocol",
    "PublishRequest",
    "Refusal",
    "SecretSet",
    "VerifiedToken",
    "check_cors_origin",
    "grant_from_answer",
    "identity_of",
    "read_secret_file",
    "secret_identity",
]
