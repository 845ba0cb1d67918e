"""Labels and selectors: Kubernetes' grammar (the cases of apimachinery's
pkg/labels/selector_test.go, less `<` and `>`, which are not taken here), what a node's frpc
declares, and how its declaration and an operator's edits share the NM's labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.model import NodeChange, UniqueId, apply_change, render_nm, state_from_nm
from schemas.labels import (
    SelectorError,
    labels_of,
    parse_declared,
    parse_field_selector,
    parse_selector,
)

UID = UniqueId("node1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["x=a,y=b,z=c", "", "x!=a,y=b", "x=", "x= ", "x=,z= ", "x= ,z= ", "!x", "notin=in"]
)
def test_what_kubernetes_reads_is_read(text: str) -> None:
    parse_selector(text)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("x=a||y=b", "at character 3 ('a')"),
        ("x==a==b", "at character 5 ('=')"),
        ("!x=a", "at character 3 ('=')"),
        ("x<a", "at character 2 ('<')"),
        ("x in (a", "at character 8 (the end)"),
        ("x in a", "at character 6 ('a')"),
        ("x,", "at character 3 (the end)"),
        (",x", "at character 1 (',')"),
        ("a b", "at character 3 ('b')"),
        ("-x=a", "at character 1 ('-')"),
        ("x=" + "v" * 64, "at character 3 ('v')"),
        ("Example.com/x=a", "at character 1 ('E')"),
    ],
)
def test_what_kubernetes_refuses_is_refused_at_the_offending_character(
    text: str, where: str
) -> None:
    with pytest.raises(SelectorError) as refused:
        parse_selector(text)
    assert str(refused.value).startswith(where)


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("", {"x": "y"}, True),
        ("x=y", {"x": "y"}, True),
        ("x=y,z=w", {"x": "y", "z": "w"}, True),
        ("x!=y,z!=w", {"x": "z", "z": "a"}, True),
        ("notin=in", {"notin": "in"}, True),
        ("x", {"x": "z"}, True),
        ("!x", {"y": "z"}, True),
        ("x=z", {}, False),
        ("x=y", {"x": "z"}, False),
        ("x=y,z=w", {"x": "w", "z": "w"}, False),
        ("x!=y,z!=w", {"x": "z", "z": "w"}, False),
        ("x", {"y": "z"}, False),
        ("!x", {"x": "z"}, False),
        ("x!=y", {}, True),  # != and notin also choose nodes without the key
        ("x notin (a,b)", {}, True),
        ("x notin (a,b)", {"x": "b"}, False),
        ("x in (a, b)", {"x": "b"}, True),
        ("x in (a,b)", {}, False),
        ("x in ()", {"x": ""}, True),
        ("x==y", {"x": "y"}, True),
        ("env=prod,site notin (sh)", {"env": "prod", "site": "bj"}, True),
        ("env=prod,site notin (sh)", {"env": "prod", "site": "sh"}, False),
        ("example.com/rack=r1", {"example.com/rack": "r1"}, True),
    ],
)
def test_selectors_choose_as_kubernetes_does(
    text: str, labels: dict[str, str], matches: bool
) -> None:
    assert parse_selector(text).matches(labels_of(labels)) is matches


@given(st.text())
def test_any_text_is_read_or_refused_in_words(text: str) -> None:
    try:
        parse_selector(text)
    except SelectorError as e:
        refusal = str(e)
    else:
        return
    assert refusal.startswith("at character")


def test_field_selectors_name_status_frps_and_the_nodes_name() -> None:
    names = frozenset({"default", "edge-a"})
    chosen = parse_field_selector("status=online, frps!=edge-a", names)
    fields = {"status": "online", "frps": "default", "metadata.name": "nodemaintenances-a"}
    assert chosen.matches(fields.__getitem__)
    assert not chosen.matches({**fields, "frps": "edge-a"}.__getitem__)
    one = parse_field_selector("metadata.name=nodemaintenances-a", names)
    assert one.matches(fields.__getitem__)
    assert not one.matches({**fields, "metadata.name": "nodemaintenances-b"}.__getitem__)
    for text, message in (
        ("status=up", "status is online or offline"),
        ("frps=nowhere", "no frps is named 'nowhere' \\(known: default, edge-a\\)"),
        ("host=x", "fields are status, frps and metadata.name"),
        ("status=online,frps", "at character 15 .*expected field=value"),
    ):
        with pytest.raises(SelectorError, match=message):
            parse_field_selector(text, names)


def test_a_malformed_declared_label_is_skipped_with_the_reason() -> None:
    labels, skipped = parse_declared(
        " site=sh , env=prod,bad key=1,x=" + "v" * 64 + ",site=bj,nope"
    )
    assert labels == (("env", "prod"), ("site", "sh"))
    assert [why.split(":")[0] for why in skipped] == [
        "'bad key=1'",
        "'x=" + "v" * 64 + "'",
        "'site=bj'",
        "'nope'",
    ]


def declared(at: datetime, labels: str) -> NodeChange:
    return NodeChange(
        reason="NewProxy", at=at, status="online", frpc_labels=parse_declared(labels)[0]
    )


def test_an_operators_label_stays_until_the_frpc_declares_that_key_otherwise() -> None:
    stored = render_nm(apply_change(None, UID, declared(T0, "site=sh,env=prod")), None)
    stored["metadata"]["labels"].update(team="edge", site="hz")  # an operator's edit
    state = state_from_nm(stored)
    assert state.labels == (("env", "prod"), ("site", "hz"), ("team", "edge"))
    # The frpc reconnects declaring what it did: the edit stays.
    t1 = T0 + timedelta(seconds=1)
    state = apply_change(state, UID, declared(t1, "site=sh,env=prod"))
    assert render_nm(state, stored)["metadata"]["labels"] == {
        "env": "prod",
        "site": "hz",
        "team": "edge",
    }
    # It declares anew: only its keys change (env is no longer declared, site is).
    state = apply_change(state, UID, declared(t1, "site=bj,rack=r1"))
    assert render_nm(state, stored)["metadata"]["labels"] == {
        "rack": "r1",
        "site": "bj",
        "team": "edge",
    }
    assert render_nm(state, stored)["status"]["frpcLabels"] == "rack=r1,site=bj"


def test_a_node_changed_before_its_nm_was_read_keeps_the_stored_labels() -> None:
    stored = render_nm(apply_change(None, UID, declared(T0, "site=sh")), None)
    stored["metadata"]["labels"]["team"] = "edge"
    # Memory knows only the frpc's new declaration, not what the store holds.
    fresh = apply_change(None, UID, declared(T0, "site=bj"))
    assert fresh.labels is None
    assert fresh.known_labels == (("site", "bj"),)
    assert render_nm(fresh, stored)["metadata"]["labels"] == {"site": "bj", "team": "edge"}
    # And a change that says nothing of labels leaves the stored ones as they are.
    silent = apply_change(None, UID, NodeChange(reason="Ping", at=T0, status="online"))
    assert render_nm(silent, stored)["metadata"]["labels"] == {"site": "sh", "team": "edge"}
