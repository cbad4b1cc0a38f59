"""Identifiers (core.ids): the UUIDv7 recloop generates, the rule for the ones clients send."""

from __future__ import annotations

import json
import re
import time
import uuid

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.ids import (
    ID_MESSAGE,
    ID_PATTERN,
    PATH_ID_MESSAGE,
    PATH_ID_PATTERN,
    check_id,
    id_problem,
    json_may_break_id_rule,
    python_pattern,
    uuid7,
)

NOW_NS = st.integers(0, (1 << 48) * 1_000_000 - 1)  # every 48-bit millisecond


@settings(deadline=None)
@given(now_ns=NOW_NS)
def test_version_variant_and_timestamp(now_ns: int) -> None:
    u = uuid.UUID(uuid7(now_ns))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == now_ns // 1_000_000


@settings(deadline=None)
@given(ms=st.lists(st.integers(0, (1 << 48) - 1), min_size=2, max_size=20, unique=True))
def test_time_ordered(ms: list[int]) -> None:
    ms.sort()
    ids = [uuid7(m * 1_000_000 + 999_999) for m in ms]
    assert ids == sorted(ids)
    assert [uuid.UUID(i) for i in ids] == sorted(uuid.UUID(i) for i in ids)


def test_default_clock_and_uniqueness() -> None:
    before = time.time_ns() // 1_000_000
    ids = {uuid7() for _ in range(1_000)}
    after = time.time_ns() // 1_000_000
    assert len(ids) == 1_000
    assert all(before <= uuid.UUID(i).int >> 80 <= after for i in ids)
    assert len({uuid7(0) for _ in range(1_000)}) == 1_000  # random bits within one millisecond


# -- the rule for ids clients send -------------------------------------------------

CONTROL = {chr(c) for c in range(0x20)} | {"\x7f"}


@settings(max_examples=500)
@given(
    value=st.text(
        st.one_of(st.characters(), st.sampled_from(sorted(CONTROL | {"/", "."}))), max_size=6
    )
)
def test_the_id_rule_is_what_its_documentation_says(value: str) -> None:
    clean = not CONTROL & set(value)
    assert (id_problem(value) is None) == clean
    routable = clean and "/" not in value and value not in (".", "..")
    assert (id_problem(value, in_path=True) is None) == routable
    # The JSON Schema patterns say the same (Python's $ aside: python_pattern).
    assert (re.search(python_pattern(ID_PATTERN), value) is not None) == clean
    assert (re.search(python_pattern(PATH_ID_PATTERN), value) is not None) == routable


def test_check_id_names_the_field() -> None:
    check_id("user_id", "u-1 \u200f\u00e9")
    with pytest.raises(InvalidInput) as caught:
        check_id("user_id", "a/b", in_path=True)
    assert (caught.value.field, caught.value.message) == ("user_id", PATH_ID_MESSAGE)
    with pytest.raises(InvalidInput) as caught:
        check_id("event_id", "a\x00b")
    assert (caught.value.field, caught.value.message) == ("event_id", ID_MESSAGE)


@settings(max_examples=500)
@given(
    value=st.text(
        st.one_of(st.characters(), st.sampled_from(sorted(CONTROL | {"/", "."}))), max_size=6
    ),
    ensure_ascii=st.booleans(),
)
def test_a_body_without_suspect_bytes_holds_no_bad_id(value: str, ensure_ascii: bool) -> None:
    """json_may_break_id_rule may say yes to a good id, never no to a bad one."""
    for body in (
        json.dumps({"user_id": value}, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass"),
        orjson.dumps({"user_id": value}) if not _surrogates(value) else b"\\",
        msgspec.json.encode({"user_id": value}) if not _surrogates(value) else b"\\",
    ):
        if not json_may_break_id_rule(body):
            assert id_problem(value, in_path=True) is None


def _surrogates(value: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in value)


_FORMER_SUSPECTS = (b"\\", b"\x7f", b"/", b'"."', b'".."')


@settings(max_examples=500)
@given(st.binary(max_size=40) | st.text(max_size=12).map(lambda s: json.dumps([s]).encode()))
def test_the_suspect_search_says_yes_wherever_the_substring_search_did(body: bytes) -> None:
    """The four searches find everything the former search for five substrings found, and
    differ only on strings starting with a dot; they say what the deletion pass they
    replaced said (its copy of the body was the rank route's cost)."""
    former = any(s in body for s in _FORMER_SUSPECTS)
    assert json_may_break_id_rule(body) == (former or b'".' in body)
    # and what the deletion pass said (the three bytes' searches replace it: no copy)
    deleted = len(body.translate(None, b"\\\x7f/")) != len(body)
    assert json_may_break_id_rule(body) == (deleted or b'".' in body)
