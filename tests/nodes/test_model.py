from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.model import (
    InvalidUniqueIdError,
    NodeChange,
    UniqueId,
    apply_change,
    parse_unique_id,
    render_nm,
    state_from_nm,
)

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
UID = UniqueId("abc123")


@pytest.mark.parametrize("value", ["abc123", "a", "edge-7.site-2", "045f85c588143a668fee"])
def test_unique_ids_that_form_a_kubernetes_name_are_accepted(value: str) -> None:
    assert parse_unique_id(value) == value


@pytest.mark.parametrize("value", ["", "ABC", "a_b", "a-", "a..b", "a/b", "ä", "x" * 237])
def test_unique_ids_that_cannot_form_a_kubernetes_name_are_refused(value: str) -> None:
    with pytest.raises(InvalidUniqueIdError):
        parse_unique_id(value)


def test_a_change_that_changes_nothing_keeps_the_state_as_it_is() -> None:
    online = apply_change(None, UID, NodeChange(reason="NewProxy", at=T0, status="online"))
    later = T0 + timedelta(seconds=5)
    assert (
        apply_change(online, UID, NodeChange(reason="again", at=later, status="online")) is online
    )


def test_last_transition_moves_only_when_the_status_does() -> None:
    state = apply_change(None, UID, NodeChange(reason="NewProxy", at=T0, status="online"))
    t1 = T0 + timedelta(seconds=1)
    state = apply_change(state, UID, NodeChange(reason="NewProxy", at=t1, remote_port=2))
    assert (state.last_transition, state.updated_at, state.remote_port) == (T0, t1, 2)
    t2 = T0 + timedelta(seconds=2)
    state = apply_change(state, UID, NodeChange(reason="CloseProxy", at=t2, status="offline"))
    assert (state.status, state.last_transition, state.reason) == ("offline", t2, "CloseProxy")


def test_an_nm_reads_back_as_the_state_it_was_rendered_from() -> None:
    state = apply_change(
        None,
        UID,
        NodeChange(
            reason="NewProxy",
            at=T0,
            status="online",
            frps_address="203.0.113.7",
            remote_port=16022,
            host_name="edge",
            mac_address="52:54:00:00:00:01",
            run_id="r1",
            proxy_name="node1.ssh",
            client_address="198.51.100.9:1",
            frpc_version="0.65.0",
            last_heartbeat=T0,
            labels=(("site", "sh"), ("team", "edge")),
            frpc_labels=(("site", "sh"),),
        ),
    )
    assert state_from_nm(render_nm(state, None)) == state


def test_rendering_keeps_what_others_own_and_the_port_it_does_not_know() -> None:
    existing = render_nm(
        apply_change(None, UID, NodeChange(reason="x", at=T0, status="online", remote_port=7)),
        None,
    )
    existing["metadata"]["labels"] = {"team": "edge"}
    existing["status"]["bindStatus"] = {"phase": "Bound"}
    state = apply_change(None, UID, NodeChange(reason="CloseProxy", at=T0, status="offline"))
    obj = render_nm(state, existing)
    assert obj["metadata"]["labels"] == {"team": "edge"}
    assert obj["status"]["bindStatus"] == {"phase": "Bound"}
    assert obj["spec"]["services"][0]["proxyPort"] == "7"
    assert obj["status"]["services"] == [
        {"name": "ssh-abc123", "status": "offline", "lastUpdate": "2026-11-25 10:00:00"}
    ]
