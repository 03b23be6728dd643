"""The consumer's decode-and-classify decision and the dead-letter record: pure, from raw bytes."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from regionmesh.names import REJECTED_TASK, RUN_STEP_TASK, SUBMIT_TASK
from regionmesh.workers.intake import (
    PREFIX_MAX,
    Decoded,
    Rejection,
    TenantHint,
    body_prefix,
    classify,
    dead_letter_record,
    residency_keep,
    tenant_hint,
)

KNOWN = {SUBMIT_TASK, RUN_STEP_TASK, REJECTED_TASK}
JSON = "application/json"
KW = {"tenant_id": "t1", "workflow": "onboard", "input": {"a": 1}, "submission_id": "s-1"}


def headers(**extra: Any) -> dict[str, Any]:
    return {"task": SUBMIT_TASK, "id": "s-1", "lang": "py"} | extra


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def check(raw: Any, ctype: Any = JSON, enc: Any = "utf-8", hdrs: Any = None) -> Decoded | Rejection:
    return classify(raw, ctype, enc, headers() if hdrs is None else hdrs, known_tasks=KNOWN)


def test_a_celery_v2_message_is_decoded() -> None:
    got = check(body([[], KW, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]))
    assert got == Decoded(task=SUBMIT_TASK, task_id="s-1", kwargs=KW, submission_id="s-1")


@pytest.mark.parametrize(
    ("raw", "ctype", "enc", "hdrs", "reason"),
    [
        (b"5", JSON, "utf-8", None, "body is a JSON int, not an [args, kwargs, embed] triple"),
        (b"null", JSON, "utf-8", None, "body is a JSON NoneType"),
        (b'"x"', JSON, "utf-8", None, "body is a JSON str"),
        (b"[1, 2]", JSON, "utf-8", None, "not an [args, kwargs, embed] triple"),
        (b'{"task": "regionmesh.submit"}', JSON, "utf-8", None, "body is a JSON dict"),
        (b'[[], [], {}]', JSON, "utf-8", None, "body must be [list, object, object]"),
        (b'[{}, {}, {}]', JSON, "utf-8", None, "body must be [list, object, object]"),
        (b'[[], {}, 5]', JSON, "utf-8", None, "body must be [list, object, object]"),
        (b"\xff\xfe[[], {}, {}]", JSON, "utf-8", None, "not valid UTF-8 (at byte 0)"),
        (b"[[], {}, {}", JSON, "utf-8", None, "body is not JSON"),
        (b"", JSON, "utf-8", None, "body is not JSON"),
        (body([[], KW, {}]), "application/data", "utf-8", None, "content type is not application/json"),
        (body([[], KW, {}]), "application/x-python-serialize", "binary", None, "content type"),
        (body([[], KW, {}]), None, None, None, "content type"),
        (body([[], KW, {}]), JSON, "latin-1", None, "content encoding is not utf-8"),
        (body([[], KW, {}]), JSON, "utf-8", [], "headers are not a mapping"),
        (body([[], KW, {}]), JSON, "utf-8", {"id": "x"}, "no 'task' header"),
        (body([[], KW, {}]), JSON, "utf-8", headers(task="evil.task"), "unknown task name"),
        (body([[], KW, {}]), JSON, "utf-8", headers(task=["x"]), "unknown task name"),
        (body([[], KW, {}]), JSON, "utf-8", headers(id=None), "header 'id'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(id=5), "header 'id'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(id="a\nb"), "header 'id'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(id="x" * 300), "header 'id'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(eta="tomorrow"), "header 'eta' is not an ISO 8601 date"),
        (body([[], KW, {}]), JSON, "utf-8", headers(expires=5), "header 'expires' must be"),
        (body([[], KW, {}]), JSON, "utf-8", headers(timelimit="x"), "header 'timelimit'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(timelimit=[1, 2, 3]), "header 'timelimit'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(timelimit=[True, None]), "header 'timelimit'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(retries="1"), "header 'retries'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(shadow=5), "header 'shadow'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(kwargsrepr={"a": 1}), "header 'kwargsrepr'"),
        (body([[], KW, {}]), JSON, "utf-8", headers(ignore_result="no"), "header 'ignore_result'"),
        (body([["pos"], KW, {}]), JSON, "utf-8", None, "positional arguments"),
        (body([[], KW | {"self": 1}, {}]), JSON, "utf-8", None,
         "keyword argument 'self'"),
        (body([[], KW, {"callbacks": [{"task": "x"}]}]), JSON, "utf-8", None, "callbacks, errbacks, chains"),
        (body([[], KW, {"chord": {"task": "x"}}]), JSON, "utf-8", None, "callbacks, errbacks, chains"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, "utf-8", None, "nested too deeply"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(raw: bytes, ctype: Any, enc: Any, hdrs: Any, reason: str) -> None:
    got = check(raw, ctype, enc, hdrs)
    assert isinstance(got, Rejection), got
    assert reason in got.reason


def test_a_rejection_keeps_task_id_and_submission_id_when_the_message_had_them() -> None:
    got = check(body([["pos"], KW, {}]))
    assert isinstance(got, Rejection)
    assert (got.task, got.task_id, got.submission_id, got.tenant_id) == (SUBMIT_TASK, "s-1", "s-1", "t1")
    undecodable = check(b"5", hdrs=headers(id="tid-9"))
    assert isinstance(undecodable, Rejection) and undecodable.task_id == "tid-9" and undecodable.submission_id is None
    forged = check(body([["pos"], KW | {"submission_id": "x\ny", "tenant_id": "t\x00"}, {}]))
    assert isinstance(forged, Rejection) and forged.submission_id is None and forged.tenant_id is None


def test_valid_iso_dates_and_time_limits_pass() -> None:
    got = check(body([[], KW, {}]), hdrs=headers(eta="2030-01-01T00:00:00+00:00", timelimit=[10, None], retries=2))
    assert isinstance(got, Decoded)


def test_a_str_body_is_read_like_bytes() -> None:
    assert isinstance(check(json.dumps([[], KW, {}])), Decoded)


@given(st.binary(max_size=300))
def test_any_bytes_are_classified_without_raising(raw: bytes) -> None:
    got = check(raw)
    assert isinstance(got, Decoded | Rejection)
    if isinstance(got, Decoded):
        assert isinstance(got.kwargs, dict)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                    max_leaves=10),
       st.sampled_from([JSON, "application/data", "text/plain", None]),
       st.sampled_from(["utf-8", "binary", None]))
@example([[], {}, None], JSON, "utf-8")  # found by hypothesis: the oracle took a None embed for malformed
def test_any_json_value_with_any_content_type_is_classified_without_raising(value: Any, ctype: Any, enc: Any) -> None:
    got = check(body(value), ctype, enc)
    # Celery reads a missing embed (None) as {} (``embed or {}``), and so does intake.
    shaped = isinstance(value, list) and len(value) == 3 and value[0] == [] and isinstance(value[1], dict) \
        and (value[2] is None or isinstance(value[2], dict)) \
        and not any((value[2] or {}).get(k) for k in ("callbacks", "errbacks", "chain", "chord")) \
        and "self" not in value[1]
    assert isinstance(got, Decoded) == (shaped and ctype == JSON and enc == "utf-8")


# The dead-letter record: a bounded prefix, the whole body's size and SHA-256.

def test_big_body_keeps_a_bounded_prefix_with_size_and_digest_of_the_whole() -> None:
    raw = body([[], KW | {"input": {"blob": "x" * (2 << 20)}}, {}])
    rec = dead_letter_record(raw, reason="too big", task_name=SUBMIT_TASK, task_id="s-1", submission_id="s-1",
                             tenant_id="t1", content_type=JSON)
    assert len(rec.payload.encode()) <= PREFIX_MAX
    assert raw.startswith(rec.payload.encode())
    assert rec.payload_size == len(raw) > PREFIX_MAX
    assert rec.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert (rec.task_id, rec.submission_id, rec.tenant_id, rec.content_type) == ("s-1", "s-1", "t1", JSON)


def test_binary_or_nul_bodies_are_kept_as_base64() -> None:
    for raw in (b"\xff\x00\x01", b'{"a": "\x00"}'):
        rec = dead_letter_record(raw, reason="r")
        assert rec.payload.startswith("base64:")
        assert base64.b64decode(rec.payload[len("base64:"):]) == raw
        assert "\x00" not in rec.payload


def test_a_prefix_cut_inside_a_character_stays_valid_text() -> None:
    raw = "é".encode() * 10
    assert body_prefix(raw, 5) == "éé"  # 5 bytes: two whole characters, half of the third dropped


def test_unstorable_ids_and_content_types_are_not_copied() -> None:
    rec = dead_letter_record(b"x", reason="r", task_id="a\x00b", submission_id="s\ud800", tenant_id="t\n",
                             content_type="app/\x00json\ud800")
    assert rec.task_id is None and rec.submission_id is None and rec.tenant_id is None
    assert rec.content_type is not None and "\x00" not in rec.content_type
    rec.content_type.encode("utf-8")  # raises if a surrogate survived


@given(st.binary(max_size=2000), st.integers(1, 600))
def test_record_properties(raw: bytes, limit: int) -> None:
    rec = dead_letter_record(raw, reason="r", limit=limit)
    assert rec.payload_size == len(raw)
    assert rec.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert "\x00" not in rec.payload
    if rec.payload.startswith("base64:"):
        assert base64.b64decode(rec.payload[7:]) == raw[:limit]
    else:
        assert raw[:limit].startswith(rec.payload.encode())
        assert len(rec.payload.encode()) >= min(len(raw), limit) - 3


@pytest.mark.parametrize(("raw", "hint"), [
    (body([[], KW, {}]), TenantHint("t1", True)),
    (body([[1], KW, {}]), TenantHint("t1", True)),  # positional arguments: the keyword still names it
    (body([["t1", "onboard", {}], KW, {}]), TenantHint("t1", True)),
    (body([["t2", "onboard", {}], KW, {}]), TenantHint("t1", False)),  # two candidates: not certain
    (body([["t2", "onboard", {}], {}, {}]), TenantHint("t2", False)),  # positional only: a guess
    (body({"task": SUBMIT_TASK, "args": [], "kwargs": KW}), TenantHint("t1", True)),  # protocol 1
    (body(KW), TenantHint("t1", True)),  # bare kwargs
    (body([[], KW, {}]).replace(b"onboard", b"on\xffboard"), TenantHint("t1", True)),  # invalid UTF-8 elsewhere
    (body([[], KW | {"tenant_id": "t1\n"}, {}]), TenantHint(None, False)),  # not a tenant id
    (body([[], KW | {"tenant_id": 5}, {}]), TenantHint(None, False)),
    (b"5", TenantHint(None, False)),
    (b"not json t1", TenantHint(None, False)),
    (b"[" * 100_000, TenantHint(None, False)),  # too deep to decode
    (b"", TenantHint(None, False)),
])
def test_the_tenant_a_body_names(raw: bytes, hint: TenantHint) -> None:
    assert tenant_hint(raw) == hint


@pytest.mark.parametrize(("tenant", "certain", "outside", "erased", "kept_tenant", "kept_body"), [
    ("t1", True, False, False, "t1", True),  # known, in its zone (or unzoned), not erased
    ("t1", True, True, False, "t1", False),  # a zoned tenant outside its zone: ids only
    ("t1", False, False, False, "t1", False),  # a guess: tagged for erasure, no body
    ("t1", True, False, True, None, False),  # erased: neither id nor body
    ("t1", False, True, True, None, False),
    (None, False, False, False, None, False),  # nobody can tell whose: no body
])
def test_what_a_dead_letter_keeps(tenant: str | None, certain: bool, outside: bool, erased: bool,
                                  kept_tenant: str | None, kept_body: bool) -> None:
    rec = residency_keep(dead_letter_record(b"[[], {}, {}]", reason="r", tenant_id=tenant), certain=certain,
                         outside_zone=outside, erased=erased)
    assert rec.tenant_id == kept_tenant and (rec.payload is not None) == kept_body
    assert rec.payload_size == 12 and rec.payload_sha256 == hashlib.sha256(b"[[], {}, {}]").hexdigest()


@given(st.binary(max_size=3000))
def test_tenant_hint_never_raises(raw: bytes) -> None:
    hint = tenant_hint(raw)
    assert hint.tenant_id is None or (hint.tenant_id.isascii() and 0 < len(hint.tenant_id) <= 128)
