"""The orchestrator's upload budget, sans-IO: each limit refuses with its code and its name,
and a job that ends gives back everything it held."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.gateway.ingest_limits import IngestLimits
from lpstream.media import MAX_SEGMENT_SECONDS
from lpstream.orchestrator.uploads import (
    MAX_SEGMENT_BITRATE,
    MAX_SEGMENT_SIZE,
    MAX_SESSION_UPLOAD_BYTES,
    UploadAllowance,
    UploadBudget,
)
from lpstream.wire import Job


def job(session: str = "a", stream: str = "s") -> Job:
    return Job(stream_id=stream, seq=0, duration_ms=2000, session_id=session)


def started(budget: UploadBudget, connection: str, session: str = "a") -> UploadAllowance:
    allowance = budget.allowance(connection)
    allowance.start(job(session))
    return allowance


def refusal(call: object, *args: object) -> tuple[int, str]:
    assert callable(call)
    with pytest.raises(RemoteProtocolError) as caught:
        call(*args)
    return caught.value.code, str(caught.value)


def test_the_default_segment_limit_holds_the_richest_longest_segment() -> None:
    assert MAX_SEGMENT_SIZE >= MAX_SEGMENT_BITRATE / 8 * MAX_SEGMENT_SECONDS
    assert IngestLimits().segment_limit == MAX_SEGMENT_SIZE  # what a gateway's buffer holds
    assert MAX_SESSION_UPLOAD_BYTES == 2 * MAX_SEGMENT_SIZE


@pytest.mark.parametrize(
    ("limits", "first", "second", "name"),
    [
        # Two jobs of one session: the second breaks the session's byte limit.
        ({"max_session_bytes": 1500}, ("c1", "a"), ("c2", "a"), "max_session_bytes"),
        # Two sessions on one connection: the second breaks the connection's byte limit.
        ({"max_connection_bytes": 1500}, ("c1", "a"), ("c1", "b"), "max_connection_bytes"),
        # Two connections: the second breaks the node's limit.
        ({"max_total_bytes": 1500}, ("c1", "a"), ("c2", "b"), "max_total_bytes"),
    ],
)
def test_bytes_over_a_shared_limit_are_503_naming_it(
    limits: dict[str, int], first: tuple[str, str], second: tuple[str, str], name: str
) -> None:
    budget = UploadBudget(**limits)
    one = started(budget, *first)
    two = started(budget, *second)
    one.charge(1000)
    two.charge(500)
    code, message = refusal(two.charge, 1)
    assert code == 503 and message.startswith("busy: ") and f"({name})" in message
    # The room comes back when a job ends.
    one.close()
    two.charge(1000 - 500)
    two.close()
    assert budget.bytes_held == 0 and budget.jobs == 0


def test_jobs_over_a_session_or_connection_limit_are_503_before_any_byte() -> None:
    budget = UploadBudget(max_session_jobs=2, max_connection_jobs=3)
    a1, a2 = started(budget, "c1", "a"), started(budget, "c2", "a")
    code, message = refusal(budget.allowance("c3").start, job("a"))
    assert code == 503 and "(max_session_jobs)" in message
    b1 = started(budget, "c1", "b")
    started(budget, "c1", "c")
    code, message = refusal(budget.allowance("c1").start, job("d"))
    assert code == 503 and "(max_connection_jobs)" in message
    a1.close()
    started(budget, "c3", "a")
    assert budget.jobs == 4
    for allowance in (a2, b1):
        allowance.close()
    assert budget.statistics().refused == {"max_session_jobs": 1, "max_connection_jobs": 1}


def test_a_refused_job_holds_nothing_and_closing_twice_gives_back_once() -> None:
    budget = UploadBudget(max_session_jobs=1)
    kept = started(budget, "c1")
    refused = budget.allowance("c1")
    with pytest.raises(RemoteProtocolError):
        refused.start(job())
    refused.close()
    kept.charge(10)
    kept.close()
    kept.close()
    assert budget.jobs == 0 and budget.bytes_held == 0
    with pytest.raises(LocalProtocolError):
        kept.charge(1)
    with pytest.raises(LocalProtocolError):
        budget.allowance("c1").charge(1)


@given(
    st.lists(
        st.tuples(
            st.sampled_from("xyz"),
            st.sampled_from("ab"),
            st.lists(st.integers(0, 700), max_size=3),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_what_is_held_never_passes_a_limit_and_all_of_it_comes_back(
    uploads: list[tuple[str, str, list[int], bool]],
) -> None:
    """Jobs start, upload and some end, in any order: the counts hold at every step."""
    budget = UploadBudget(
        max_session_jobs=3,
        max_session_bytes=1500,
        max_connection_jobs=4,
        max_connection_bytes=2000,
        max_total_bytes=2500,
    )
    open_: list[tuple[str, str, UploadAllowance]] = []
    for connection, session, sizes, ends in uploads:
        allowance = budget.allowance(connection)
        try:
            allowance.start(job(session))
            for size in sizes:
                allowance.charge(size)
        except RemoteProtocolError:
            allowance.close()  # a refused job is closed by its stream
        else:
            open_.append((connection, session, allowance))
        if ends and open_:
            open_.pop(0)[2].close()
        for key, index, jobs_limit, bytes_limit in (
            ("connection", 0, 4, 2000),
            ("session", 1, 3, 1500),
        ):
            for name in {o[index] for o in open_}:
                mine = [o[2] for o in open_ if o[index] == name]
                assert len(mine) <= jobs_limit, key
                assert sum(a.held for a in mine) <= bytes_limit, key
        assert budget.bytes_held == sum(o[2].held for o in open_) <= 2500
        assert budget.jobs == len(open_)
    for _, _, allowance in open_:
        allowance.close()
    assert budget.bytes_held == 0 and budget.jobs == 0
