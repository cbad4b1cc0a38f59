"""Console sessions: who may open one, how long it lasts, CSRF tokens, loopback."""

from __future__ import annotations

import base64

from recloop.console.sessions import MAX_REVOKED, Sessions, csrf_ok, is_loopback
from recloop.core.auth import new_key

READ, READ_SHA = new_key()
INGEST, INGEST_SHA = new_key()
ADMIN, ADMIN_SHA = new_key()
KEYS = [("dash", READ_SHA, ["read"]), ("orch", INGEST_SHA, ["ingest"])]
SECRET = "s" * 40


def test_a_read_key_opens_a_session_that_expires() -> None:
    now = [1000.0]
    sessions = Sessions(KEYS, seconds=60, clock=lambda: now[0])
    assert sessions.sign_in("rlk_wrong") is None
    assert sessions.sign_in(INGEST) is None  # no read role
    opened = sessions.sign_in(f" {READ} ")
    assert opened is not None
    sid, session = opened
    assert session.principal.name == "dash" and not session.admin()
    assert sessions.get(sid) == session
    now[0] += 59.9
    assert sessions.get(sid) == session
    now[0] += 0.2
    assert sessions.get(sid) is None
    assert sessions.get(None) is None and sessions.get("") is None


def test_the_cookie_holds_neither_the_key_nor_its_digest() -> None:
    opened = Sessions(KEYS, SECRET).sign_in(READ)
    assert opened is not None
    value = opened[0]
    payload = base64.urlsafe_b64decode(value.split(".")[0] + "==")
    for secret in (READ, READ_SHA, READ_SHA[:16], SECRET):
        assert secret not in value and secret.encode() not in payload


def test_a_session_crosses_processes_and_restarts() -> None:
    """Another Sessions (another instance, or this one restarted) with the same keys and
    secret reads the cookie; another secret, a forged or tampered value do not."""
    opened = Sessions(KEYS, SECRET).sign_in(READ)
    assert opened is not None
    value, session = opened
    assert Sessions(KEYS, SECRET).get(value) == session
    assert Sessions(KEYS, "t" * 40).get(value) is None
    assert Sessions(list(reversed(KEYS))).get(value) is None  # derived secret: another one
    derived = Sessions(KEYS).sign_in(READ)
    assert derived is not None and Sessions(list(reversed(KEYS))).get(derived[0]) == derived[1]
    body, signature = value.rsplit(".", 1)
    assert Sessions(KEYS, SECRET).get(f"{body}.{signature[::-1]}") is None
    assert Sessions(KEYS, SECRET).get("garbage") is None


def test_the_keys_configured_now_decide() -> None:
    opened = Sessions(KEYS, SECRET).sign_in(READ)
    assert opened is not None
    value = opened[0]
    promoted = Sessions([("dash", READ_SHA, ["admin"]), KEYS[1]], SECRET).get(value)
    assert promoted is not None and promoted.admin()  # roles as configured now
    assert Sessions([KEYS[1], ("ops", ADMIN_SHA, ["admin"])], SECRET).get(value) is None


def test_anonymous_sessions_only_while_no_key_is_configured() -> None:
    value, session = Sessions([], SECRET).anonymous("127.0.0.1")
    assert session.admin() and Sessions([], SECRET).get(value) == session
    assert Sessions(KEYS, SECRET).get(value) is None


def test_sign_out_and_tokens() -> None:
    sessions = Sessions(KEYS)
    opened = sessions.sign_in(READ)
    assert opened is not None
    sid, session = opened
    other = sessions.sign_in(READ)
    assert other is not None and other[1].csrf != session.csrf and other[0] != sid
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, other[1].csrf) and not csrf_ok(session, None)
    sessions.sign_out(sid)
    assert sessions.get(sid) is None and sessions.get(other[0]) is not None


def test_the_signed_out_list_stays_bounded() -> None:
    now = [0.0]
    sessions = Sessions([], seconds=10, clock=lambda: now[0])
    values = [sessions.anonymous("127.0.0.1")[0] for _ in range(MAX_REVOKED + 5)]
    for value in values:
        sessions.sign_out(value)
    assert len(sessions._revoked) == MAX_REVOKED
    assert sessions.get(values[0]) is not None  # forgotten first (it is still signed)
    assert sessions.get(values[-1]) is None
    now[0] += 10
    assert sessions.get(values[-1]) is None  # expired anyway


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


def test_the_score_histogram_is_read_at_most_once_a_period() -> None:
    from recloop.console.pages import ScoreHistogram

    now = [100.0]
    reads: list[int] = []
    held = [10.0, 55.0, 99.0]

    def scores() -> list[float]:
        reads.append(1)
        return list(held)

    bins = ScoreHistogram(60.0, clock=lambda: now[0])
    chart, at = bins.chart(scores)
    assert at == 100.0 and sum(v or 0 for v in chart.series[0].values) == 3
    held.append(1.0)
    now[0] += 59.0
    assert bins.chart(scores) == (chart, 100.0) and len(reads) == 1  # within the period
    now[0] += 1.0
    chart, at = bins.chart(scores)
    assert at == 160.0 and sum(v or 0 for v in chart.series[0].values) == 4 and len(reads) == 2
