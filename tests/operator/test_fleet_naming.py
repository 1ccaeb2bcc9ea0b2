"""Children's names from arbitrary target names: deterministic, DNS-safe, short, unique."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from revisor_operator.decisions.fleet.naming import (
    child_name,
    label_safe,
    query_job_name,
    rollout_hash,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
#: Set names are DNS subdomains (what the API server accepts as a resource name).
set_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z", fullmatch=True)
#: Targets are anything a Secret name, a list entry or a schema may be.
target_names = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"),
    min_size=1,
    max_size=253,
)


@settings(max_examples=300)
@given(set_name=set_names, target=target_names)
def test_a_child_name_is_a_dns_label_of_at_most_63_characters(set_name: str, target: str) -> None:
    name = child_name(set_name=set_name, target=target)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name
    assert name == child_name(set_name=set_name, target=target)


@settings(max_examples=200)
@given(set_name=set_names, targets=st.lists(target_names, min_size=2, max_size=40, unique=True))
def test_distinct_targets_get_distinct_children(set_name: str, targets: list[str]) -> None:
    names = [child_name(set_name=set_name, target=t) for t in targets]
    assert len(set(names)) == len(names)


def test_targets_that_read_alike_stay_apart() -> None:
    a = child_name(set_name="shop", target="Tenant_A")
    b = child_name(set_name="shop", target="tenant-a")
    assert a != b
    assert a.startswith("shop-tenant-a-") and b.startswith("shop-tenant-a-")


def test_children_of_two_sets_never_share_a_name() -> None:
    assert child_name(set_name="shop", target="a-x") != child_name(set_name="shop-a", target="x")


@settings(max_examples=300)
@given(text=target_names)
def test_label_values_are_valid_and_kept_when_they_already_are(text: str) -> None:
    value = label_safe(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value
    if len(text) <= 63 and LABEL_VALUE.match(text):
        assert value == text


@given(set_name=set_names, round_=st.integers(1, 10**6), page=st.integers(1, 10**4))
def test_query_jobs_have_dns_label_names(set_name: str, round_: int, page: int) -> None:
    name = query_job_name(set_name=set_name, round_=round_, page=page)
    assert len(name) <= 63 and DNS_LABEL.match(name), name


def test_the_rollout_is_the_template_the_scripts_and_the_marks_only() -> None:
    base = rollout_hash(template={"target": "head"}, scripts="s1", annotations={})
    assert base == rollout_hash(template={"target": "head"}, scripts="s1", annotations={})
    assert base != rollout_hash(template={"target": "base"}, scripts="s1", annotations={})
    assert base != rollout_hash(template={"target": "head"}, scripts="s2", annotations={})
    retried = {"revisor.dev/retry": "1"}
    assert base != rollout_hash(template={"target": "head"}, scripts="s1", annotations=retried)
