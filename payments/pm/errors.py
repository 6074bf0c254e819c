"""The errors the payment rules raise.

Every way a ticket can be refused has its own class, so callers match on the class (or on the
machine-readable ``reason``) and never on a message. ``fatal`` tells the caller how much of a
payment the error spoils: a fatal error rejects the whole payment, a non-fatal one stops crediting
at the ticket that raised it (PAYMENTS.md, "Checks on receipt").
"""

from __future__ import annotations

from typing import ClassVar

from lpstream.errors import LocalProtocolError, LpstreamError, RemoteProtocolError

__all__ = [
    "InsufficientSenderReserveError",
    "InvalidRecipientError",
    "InvalidRecipientRandError",
    "InvalidSenderError",
    "InvalidSignatureError",
    "InvalidTicketError",
    "MalformedPaymentError",
    "NonceExhaustedError",
    "NonceReplayError",
    "SenderUnlockingError",
    "TicketParamsExpiredError",
    "TicketParamsRejectedError",
    "TooManyNoncesError",
]


class InvalidTicketError(RemoteProtocolError):
    """A sender's ticket broke the rules; answered with status 402.

    Attributes:
        fatal: True when the whole payment is rejected, False when only this ticket and the
            rest of its batch go uncredited.
        reason: a short machine-readable name of the rule that was broken.
    """

    fatal: ClassVar[bool] = True
    reason_code: ClassVar[str] = "invalid_ticket"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=402)

    @property
    def reason(self) -> str:
        return self.reason_code


class SenderUnlockingError(InvalidTicketError):
    """The sender's deposit and reserve unlock within a round: its tickets may soon be unpaid."""

    reason_code = "sender_unlocking"


class InvalidRecipientError(InvalidTicketError):
    """The ticket pays someone else."""

    reason_code = "invalid_recipient"


class InvalidSenderError(InvalidTicketError):
    """The ticket names the zero address as its sender."""

    reason_code = "invalid_sender"


class InvalidRecipientRandError(InvalidTicketError):
    """The ticket's recipientRandHash is not one we issued for these parameters."""

    reason_code = "invalid_recipient_rand"


class InvalidSignatureError(InvalidTicketError):
    """The signature is malformed (length, high s, v), or was not made by the ticket's sender."""

    fatal = False
    reason_code = "invalid_signature"


class NonceReplayError(InvalidTicketError):
    """This sender nonce was already seen for this recipientRand."""

    fatal = False
    reason_code = "nonce_replayed"


class TooManyNoncesError(InvalidTicketError):
    """The recipientRand has already taken its maximum number of nonces."""

    fatal = False
    reason_code = "too_many_nonces"


class TicketParamsExpiredError(InvalidTicketError):
    """The ticket parameters' expirationBlock has been reached."""

    fatal = False
    reason_code = "params_expired"


class MalformedPaymentError(RemoteProtocolError):
    """The payment bytes could not be decoded, or break a size limit; answered with status 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=400)


class InsufficientSenderReserveError(LpstreamError):
    """No face value at or above the ticket EV fits in the sender's max float.

    The orchestrator cannot issue ticket parameters to this sender until it funds its reserve.
    """

    def __init__(self, message: str = "insufficient sender reserve") -> None:
        super().__init__(message)


class TicketParamsRejectedError(LpstreamError):
    """The sender refuses an orchestrator's ticket parameters (or cannot pay at all).

    Attributes:
        reason: a short machine-readable name of the check that failed: ``expired``,
            ``ev_not_below_face_value``, ``ev_above_max``, ``total_ev_above_max``,
            ``unlock_in_progress``, ``no_deposit``, ``no_reserve``, ``face_value_above_deposit``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NonceExhaustedError(LocalProtocolError):
    """Every uint32 sender nonce for a recipientRandHash has been used; fetch fresh parameters."""
