"""The orchestrator's rules for a live session's jobs (``LiveAccounts.check_job``) on chain:
a session priced at 0 runs with no payment; any other is refused (402) until paid."""

from __future__ import annotations

from typing import Any, cast

import pytest

from lpstream.errors import RemoteProtocolError
from lpstream.orchestrator.live import LiveAccounts
from lpstream.wire import LiveOpen


def accounts() -> LiveAccounts:
    # On chain (a receiver is there), with one free pipeline. A session priced at 0 never
    # asks the receiver anything; a priced one is refused before it would.
    return LiveAccounts(payments=cast(Any, object()), prices={"noop": 0}, default_price=5)


def test_a_session_priced_at_zero_runs_without_a_payment() -> None:
    live = accounts()
    owner = object()
    account = live._open(LiveOpen(stream_id="s", session_id="a", pipeline="noop"), owner)
    assert account.free and account.price_per_second == 0
    live.check_job("s", "a", "noop", now=1.0, connection=owner)
    assert account.started_at == 1.0


def test_a_priced_session_is_refused_until_paid() -> None:
    live = accounts()
    owner = object()
    account = live._open(LiveOpen(stream_id="s", session_id="b", pipeline="grade"), owner)
    assert not account.free and account.price_per_second == 5
    with pytest.raises(RemoteProtocolError, match="payment required") as caught:
        live.check_job("s", "b", "grade", now=1.0, connection=owner)
    assert caught.value.code == 402 and account.started_at is None


def test_a_free_session_still_belongs_to_its_connection() -> None:
    live = accounts()
    live._open(LiveOpen(stream_id="s", session_id="c", pipeline="noop"), object())
    with pytest.raises(RemoteProtocolError) as caught:
        live.check_job("s", "c", "noop", now=1.0, connection=object())
    assert caught.value.code == 403
