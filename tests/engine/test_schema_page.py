"""A page of schema names: compact, hashed, read back whole or not at all, and as full as fits."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from revisor import __version__
from revisor.contract import (
    MAX_RESULT_BYTES,
    SCHEMA_PAGE,
    ExitCode,
    Reason,
    Result,
    SchemaPage,
    decode_names,
    encode_names,
)
from revisor.errors import BadInput
from revisor.output import result_document
from revisor.redaction import forget_secrets, register_secret
from revisor.tenants import PAGE_BYTES, fit_page

#: A name as a query can return one: any text but empty, without a line break (or NUL).
NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\0"),
    min_size=1,
    max_size=63,
)


@given(st.lists(NAMES, max_size=200))
def test_names_round_trip(names: list[str]) -> None:
    assert decode_names(encode_names(names)) == names


def test_no_names_are_the_empty_string() -> None:
    assert encode_names([]) == ""
    assert decode_names("") == []


@pytest.mark.parametrize("bad", ["", "a\nb"])
def test_a_name_that_would_make_the_encoding_ambiguous_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode_names(["a", bad])


@pytest.mark.parametrize("garbage", ["not base64!", "aGVsbG8=", "eJw="])
def test_decoding_garbage_is_a_value_error(garbage: str) -> None:
    with pytest.raises(ValueError, match="not a list of encoded names"):
        decode_names(garbage)


@settings(max_examples=300)
@given(st.lists(NAMES, max_size=20), st.lists(NAMES, max_size=20))
def test_two_lists_share_a_hash_exactly_when_they_are_equal(a: list[str], b: list[str]) -> None:
    """The hash sees the list, not a joined text: ["a,b"] and ["a", "b"] differ."""
    assert (SchemaPage.hash_of(a) == SchemaPage.hash_of(b)) == (a == b)
    assert len(SchemaPage.hash_of(a)) == 64


def test_joined_names_do_not_collide() -> None:
    assert SchemaPage.hash_of(["a\nb"]) != SchemaPage.hash_of(["a", "b"])
    assert SchemaPage.hash_of(['a","b']) != SchemaPage.hash_of(["a", "b"])
    assert SchemaPage.hash_of([]) != SchemaPage.hash_of([""])


@given(st.lists(NAMES, max_size=50, unique=True), st.integers(0, 10**6))
def test_a_page_reads_back_through_a_result_document(names: list[str], remaining: int) -> None:
    page = SchemaPage(
        names=tuple(sorted(names)),
        remaining=remaining,
        total=len(names) + remaining,
        list_hash=SchemaPage.hash_of(sorted(names)),
    )
    result = Result(command="schemas", exit_code=ExitCode.OK, details=page.to_details())
    again = Result.from_json(result.to_json(limit=10**9))
    assert SchemaPage.from_details(again.details) == page


def test_plain_list_names_are_read_too() -> None:
    raw = {"names": ["a", "b"], "remaining": 0, "total": 2, "listHash": "0" * 64}
    page = SchemaPage.from_details({SCHEMA_PAGE: raw})
    assert page is not None and page.names == ("a", "b")


@pytest.mark.parametrize(
    "damage",
    [
        {"names": "not base64!"},
        {"names": [1, 2]},
        {"count": 3},  # the names were cut
        {"remaining": -1},
        {"total": True},
        {"listHash": "abc"},
        {"listHash": None},
    ],
)
def test_a_damaged_page_is_no_page(damage: dict[str, object]) -> None:
    good = SchemaPage(names=("a", "b"), remaining=0, total=2, list_hash="0" * 64).to_details()
    assert SchemaPage.from_details(good) is not None
    assert SchemaPage.from_details({SCHEMA_PAGE: {**good[SCHEMA_PAGE], **damage}}) is None
    assert SchemaPage.from_details({}) is None
    assert SchemaPage.from_details({SCHEMA_PAGE: "a,b"}) is None


def test_compressed_names_are_not_scrubbed() -> None:
    """A registered secret ("app", a user from a Secret) could garble the encoding: it is data."""
    names = [f"app/{i}+app" for i in range(200)]
    page = SchemaPage(names=tuple(names), remaining=0, total=200, list_hash="0" * 64)
    register_secret("app")
    try:
        result = Result(
            command="schemas", exit_code=ExitCode.OK, error="user app", details=page.to_details()
        )
        written = json.loads(result_document(result, limit=10**9))
    finally:
        forget_secrets()
    assert written["error"] == "user ***"
    assert SchemaPage.from_details(written["details"]) == page


def _result(page: SchemaPage) -> Result:
    return Result(
        command="schemas",
        exit_code=ExitCode.OK,
        engine_version=__version__,
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:01Z",
        detail_reason=Reason.SCHEMAS_LISTED,
        details=page.to_details(),
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=3000, unique=True))
def test_pages_hold_as_many_names_as_fit_and_together_the_whole_list(names: list[str]) -> None:
    """Each page's document fits, one more name would not, and the pages add up to the list."""
    names.sort()
    collected: list[str] = []
    after: str | None = None
    while True:
        document = result_document(fit_page(names, after=after, result=_result), limit=10**9)
        assert len(document.encode()) <= PAGE_BYTES < MAX_RESULT_BYTES
        page = SchemaPage.from_details(json.loads(document)["details"])
        assert page is not None and page.total == len(names)
        assert page.list_hash == SchemaPage.hash_of(names)
        rest = names[len(collected) :]
        assert page.names == tuple(rest[: len(page.names)])
        assert page.remaining == len(rest) - len(page.names)
        if page.remaining:
            one_more = SchemaPage(
                names=tuple(rest[: len(page.names) + 1]),
                remaining=page.remaining - 1,
                total=page.total,
                list_hash=page.list_hash,
            )
            assert len(result_document(_result(one_more), limit=10**9).encode()) > PAGE_BYTES
        collected += page.names
        if not page.remaining:
            break
        after = page.names[-1]
    assert collected == names


def test_a_page_after_the_last_name_is_empty() -> None:
    document = result_document(fit_page(["a", "b"], after="b", result=_result))
    page = SchemaPage.from_details(json.loads(document)["details"])
    assert page == SchemaPage(
        names=(), remaining=0, total=2, list_hash=SchemaPage.hash_of(["a", "b"])
    )


def test_a_name_too_long_for_any_page_is_refused() -> None:
    """Otherwise the operator would ask for the same empty page for ever."""
    noise = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(200))
    names = ["a", "b" + noise]  # 12,800 hexadecimal digits compress to some 6 KiB
    with pytest.raises(BadInput, match="too long for a result document"):
        fit_page(names, after="a", result=_result)
