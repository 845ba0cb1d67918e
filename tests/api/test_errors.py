"""Every domain error has one status, the same in both envelopes, decided in `api.errors`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

import api.app  # noqa: F401  (every module, so every error class, is imported)
from api.app import create_app
from api.errors import ANSWERS, RangeNotSatisfiableError, answer
from api.routes import _plugin
from nodes.errors import AdapterError, InvalidInputError
from tests.support import settings_for


def _classes(root: type[AdapterError]) -> set[type[AdapterError]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _classes(sub)
    return found


def _example(cls: type[AdapterError]) -> AdapterError:
    if cls is RangeNotSatisfiableError:
        return RangeNotSatisfiableError("/f", 3)
    return cls("why it failed")


def test_every_error_class_has_a_status_of_its_own() -> None:
    unlisted = {cls.__qualname__ for cls in _classes(AdapterError) - ANSWERS.keys()}
    assert not unlisted, f"give these a line in api.errors.ANSWERS: {sorted(unlisted)}"
    assert ANSWERS.keys() <= _classes(AdapterError)


@pytest.mark.parametrize("cls", sorted(ANSWERS, key=str), ids=lambda cls: cls.__name__)
def test_an_error_answers_its_one_status_in_each_envelope(cls: type[AdapterError]) -> None:
    error = _example(cls)
    status = ANSWERS[cls].status
    versioned = answer(make_mocked_request("GET", "/api/v1/nodes/x"), error)
    assert versioned.status == status
    assert json.loads(versioned.text or "") == {"error": error.kind, "details": error.details}
    original = answer(make_mocked_request("GET", "/frp_fetch/x"), error)
    assert original.status == status
    body = json.loads(original.text or "")
    assert body["code"] == status
    assert str(error) in body["error"]["message"]


def test_input_details_keep_their_fields_and_the_original_says_them_in_words() -> None:
    error = InvalidInputError({"path": ["must be absolute"]}, kind="invalid query")
    versioned = answer(make_mocked_request("GET", "/api/v1/files"), error)
    assert json.loads(versioned.text or "")["details"] == {"path": ["must be absolute"]}
    original = answer(make_mocked_request("GET", "/reverse_proxy/x"), error)
    message = json.loads(original.text or "")["error"]["message"]
    assert message == 'invalid query: {"path": ["must be absolute"]}'


def test_the_plugin_route_is_timed_and_nothing_else(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    plugin = [
        route
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/frps/")
    ]
    assert plugin
    for route in plugin:
        assert getattr(route.handler, "__wrapped__", None) is _plugin
