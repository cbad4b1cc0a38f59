"""Console sessions: who may open one, how long it lasts, CSRF tokens, loopback."""

from __future__ import annotations

from recloop.console.sessions import MAX_SESSIONS, Sessions, csrf_ok, is_loopback
from recloop.core.auth import KeyRing, new_key

READ, READ_SHA = new_key()
INGEST, INGEST_SHA = new_key()
RING = KeyRing([("dash", READ_SHA, ["read"]), ("orch", INGEST_SHA, ["ingest"])])


def test_a_read_key_opens_a_session_that_expires() -> None:
    now = [1000.0]
    sessions = Sessions(RING, seconds=60, clock=lambda: now[0])
    assert sessions.sign_in("rlk_wrong") is None
    assert sessions.sign_in(INGEST) is None  # no read role
    opened = sessions.sign_in(f" {READ} ")
    assert opened is not None
    sid, session = opened
    assert READ not in sid and session.principal.name == "dash" and not session.admin()
    assert sessions.get(sid) == session
    now[0] += 59.9
    assert sessions.get(sid) == session
    now[0] += 0.2
    assert sessions.get(sid) is None
    assert sessions.get(None) is None and sessions.get("") is None


def test_sign_out_and_tokens() -> None:
    sessions = Sessions(RING)
    opened = sessions.sign_in(READ)
    assert opened is not None
    sid, session = opened
    other = sessions.sign_in(READ)
    assert other is not None and other[1].csrf != session.csrf and other[0] != sid
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, other[1].csrf) and not csrf_ok(session, None)
    sessions.sign_out(sid)
    assert sessions.get(sid) is None and sessions.get(other[0]) is not None


def test_the_table_stays_bounded() -> None:
    now = [0.0]
    sessions = Sessions(RING, seconds=10, clock=lambda: now[0])
    first = sessions.anonymous("127.0.0.1")[0]
    for _ in range(MAX_SESSIONS + 5):
        sessions.anonymous("127.0.0.1")
    assert len(sessions._sessions) == MAX_SESSIONS
    assert sessions.get(first) is None  # the oldest went first


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback(None) and not is_loopback("host")


def test_overview_rates_between_looks() -> None:
    from recloop.console.pages import Rates

    now = [100.0]
    rates = Rates(min_seconds=1.0, clock=lambda: now[0])
    now[0] += 0.5
    assert rates.rates(50, 40) == (0.0, 0.0, 0.0)  # too soon: no figure yet
    now[0] += 1.5  # 2 s after the start, when both counters were zero
    assert rates.rates(100, 80) == (50.0, 40.0, 2.0)
    now[0] += 0.1
    assert rates.rates(500, 500) == (50.0, 40.0, 2.0)  # too soon: the last figures
    now[0] += 3.9  # 4 s after the previous figures
    assert rates.rates(300, 280) == (50.0, 50.0, 4.0)
