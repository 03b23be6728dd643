"""Submission validation: identifiers in full, text PostgreSQL can store, reasons without input values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.errors import RejectedSubmission
from regionmesh.workers.submission import (
    KEY_MAX,
    MAX_INPUT_DEPTH,
    input_problem,
    kwargs_summary,
    parse_submission,
    submission_id_for,
)

MARKER = "SECRET-7f3a"
BASE: dict[str, Any] = {"tenant_id": "t3", "workflow": "onboard", "input": {"a": 1}, "submission_id": "s-1"}


def reject(payload: dict[str, Any], limit: int = 1 << 20) -> str:
    with pytest.raises(RejectedSubmission) as info:
        parse_submission(payload, max_input_bytes=limit)
    return info.value.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant_id": "t3\n"}, "tenant_id must match"),
        ({"tenant_id": "t3 "}, "tenant_id must match"),
        ({"tenant_id": "t" * 129}, "tenant_id must match"),
        ({"workflow": "onboard\n"}, "workflow must be"),
        ({"workflow": "on board"}, "workflow must be"),
        ({"workflow": ["onboard"]}, "workflow must be"),
        ({"submission_id": "s-1\n"}, "submission_id must be"),
        ({"submission_id": "s 1"}, "submission_id must be"),
        ({"submission_id": "s" * 129}, "submission_id must be"),
        ({"submission_id": 7}, "submission_id must be"),
        ({"submission_id": "é"}, "submission_id must be"),
        ({"idempotency_key": "k\x00"}, "idempotency_key contains NUL"),
        ({"idempotency_key": "k\ud800"}, "idempotency_key contains a lone UTF-16 surrogate"),
        ({"idempotency_key": "k\n"}, "idempotency_key contains a control character"),
        ({"idempotency_key": "k\x7f"}, "idempotency_key contains a control character"),
        ({"idempotency_key": "k" * (KEY_MAX + 1)}, f"longer than {KEY_MAX}"),
        ({"idempotency_key": ""}, "must stamp a submission_id"),
        ({"input": {"a": "x\x00y"}}, "input.#0 contains NUL"),
        ({"input": {"a\x00": 1}}, "a key in input contains NUL"),
        ({"input": {"a": ["ok", "\udc80"]}}, "input.#0[1] contains a lone UTF-16 surrogate"),
        ({"input": {"a": float("nan")}}, "not a finite number"),
        ({"input": {"a": float("inf")}}, "not a finite number"),
        ({"input": {"a": b"bytes"}}, "holds a bytes"),
        ({"input": []}, "must be a JSON object"),
        ({"hops": "1"}, "hops must be a non-negative integer"),
        ({"hops": True}, "hops must be a non-negative integer"),
        ({"hops": -1}, "hops must be a non-negative integer"),
        ({"v": True}, "unsupported message version"),
        ({"submitted_region": "us-east\n"}, "submitted_region must be a region name"),
        ({"submitted_region": 3}, "submitted_region must be a region name"),
    ],
)
def test_bad_fields_are_rejected_with_the_reason(change: dict[str, Any], reason: str) -> None:
    assert reason in reject(BASE | change)


def test_a_trailing_newline_is_not_an_alias_of_a_valid_tenant() -> None:
    assert parse_submission(BASE, max_input_bytes=100).tenant_id == "t3"
    assert "tenant_id" in reject(BASE | {"tenant_id": "t3\n"})


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_INPUT_DEPTH + 1):
        deep = [deep]
    assert "nested deeper" in reject(BASE | {"input": {"a": deep}})
    ok: Any = "leaf"
    for _ in range(MAX_INPUT_DEPTH - 1):
        ok = [ok]
    assert parse_submission(BASE | {"input": {"a": ok}}, max_input_bytes=1 << 20).input == {"a": ok}


def test_invalid_tenant_or_submission_id_is_not_copied_onto_the_rejection() -> None:
    with pytest.raises(RejectedSubmission) as info:
        parse_submission(BASE | {"tenant_id": "t\x00", "submission_id": "bad\nid"}, max_input_bytes=100)
    assert info.value.tenant_id is None and info.value.submission_id is None
    with pytest.raises(RejectedSubmission) as info:
        parse_submission(BASE | {"input": {"a": "\x00"}}, max_input_bytes=100)
    assert (info.value.tenant_id, info.value.submission_id) == ("t3", "s-1")


@given(
    prefix=st.text(max_size=20),
    bad=st.sampled_from(["\x00", "\ud800", "\udfff", "\udc00"]),
    suffix=st.text(max_size=20),
    where=st.sampled_from(["value", "key", "nested"]),
)
def test_nul_or_surrogate_anywhere_in_input_is_rejected_without_echoing_it(
    prefix: str, bad: str, suffix: str, where: str
) -> None:
    text = MARKER + prefix + bad + suffix
    data: dict[str, Any] = {
        "value": {"v": text},
        "key": {text: 1},
        "nested": {"a": [{"b": [1, text]}]},
    }[where]
    reason = reject(BASE | {"input": data})
    assert "NUL" in reason or "surrogate" in reason
    assert MARKER not in reason


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text().filter(lambda s: "\x00" not in s and not any("\ud800" <= c <= "\udfff" for c in s)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=8).filter(lambda s: "\x00" not in s), children, max_size=4),
    max_leaves=20,
))
def test_any_storable_json_is_accepted_and_kept(value: Any) -> None:
    sub = parse_submission(BASE | {"input": {"v": value}}, max_input_bytes=1 << 20)
    assert sub.input == {"v": value}
    assert input_problem(sub.input) is None
    json.dumps(sub.input, allow_nan=False)  # raises if the check let a non-JSON value through


@given(st.text(min_size=1, max_size=40))
def test_whitespace_and_newline_variants_of_identifiers_are_never_accepted(name: str) -> None:
    for variant in (name + "\n", " " + name, name + "\t", name + "\r\n"):
        for field in ("tenant_id", "workflow", "submission_id"):
            with pytest.raises(RejectedSubmission):
                parse_submission(BASE | {field: variant}, max_input_bytes=1 << 20)


def test_size_limit_counts_the_serialised_input() -> None:
    assert "over the limit of 100 bytes" in reject(BASE | {"input": {"a": "x" * 200}}, limit=100)


@pytest.mark.parametrize(("key", "same"), [("order-1", True), ("order 1", False), ("é-1", False), ("k\n", False)])
def test_submission_id_for_keeps_valid_keys_and_derives_the_rest(key: str, same: bool) -> None:
    sid = submission_id_for(key)
    assert (sid == key) is same
    assert parse_submission(BASE | {"submission_id": sid}, max_input_bytes=100).submission_id == sid
    assert submission_id_for(key) == sid


def test_flower_summary_never_shows_input_even_when_it_cannot_be_serialised() -> None:
    shown = kwargs_summary({"tenant_id": "t3", "workflow": "w", "input": {"a": MARKER}, "submission_id": "s"})
    assert MARKER not in shown and "bytes>" in shown
    odd = kwargs_summary({"tenant_id": ["x"], "input": {"a": {1, 2}}, "submission_id": "s\nforged=1"})
    assert "<invalid>" in odd and "\n" not in odd
