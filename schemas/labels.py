"""Node labels and the selectors that choose nodes by them, in Kubernetes' grammar.

A label is `key=value`: the key a name of at most 63 characters (letters, digits, `-`, `_`,
`.`, starting and ending with a letter or digit) with an optional DNS subdomain prefix and
`/`; the value empty or such a name. A selector is requirements joined by `,` (and):
`key=value` (or `==`), `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key`, `!key`;
`!=` and `notin` also match nodes without the key, as in Kubernetes
(k8s.io/apimachinery/pkg/labels/selector.go). A field selector chooses by the node's
`status` (online, offline) and `frps` (the name of the frps it is served by).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

Labels = tuple[tuple[str, str], ...]  # sorted by key: immutable, and one key once
NO_LABELS: Labels = ()

_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 63
_MAX_PREFIX = 253
# What ends a key or value in a selector: whitespace and the grammar's own characters.
_SPECIAL = frozenset("!=(),<>")


class SelectorError(ValueError):
    """A selector that cannot be read; says where and why."""


def key_error(key: str) -> str | None:
    """Why `key` is not a label key; None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= _MAX_PREFIX and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"key {key!r}: the prefix must be a DNS subdomain of at most 253 characters"
    if not name:
        return f"key {key!r}: the name part is empty"
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        return (
            f"key {key!r}: the name part must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def value_error(value: str) -> str | None:
    """Why `value` is not a label value; None when it is one (the empty value is)."""
    if len(value) > _MAX_NAME or not _NAME.fullmatch(value):
        return (
            f"value {value!r}: at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    return None


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


def parse_declared(text: str) -> tuple[Labels, list[str]]:
    """The labels an frpc declares (`site=sh,env=prod`) and why each malformed one was
    skipped: a node's labels never keep it out."""
    found: dict[str, str] = {}
    skipped: list[str] = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            continue
        key, eq, value = (part.strip() for part in entry.partition("="))
        why = "not key=value" if not eq else key_error(key) or value_error(value)
        if why is None and key in found:
            why = f"key {key!r} is given twice"
        if why is None:
            found[key] = value
        else:
            skipped.append(f"{entry!r}: {why}")
    return labels_of(found), skipped


def redeclare(labels: Labels, before: Labels, declared: Labels) -> Labels:
    """`labels` after the frpc declares `declared` instead of `before`: only the keys it
    declares, or declared before, change; an operator's other labels stay."""
    merged = dict(labels)
    for key, _ in before:
        merged.pop(key, None)
    merged.update(declared)
    return labels_of(merged)


Operator = Literal["=", "!=", "in", "notin", "exists", "!"]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values  # != and notin: also nodes without the key


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements that must all hold; the empty selector chooses every node."""

    requirements: tuple[Requirement, ...] = ()
    text: str = ""

    def matches(self, labels: Labels) -> bool:
        if not self.requirements:
            return True
        present = dict(labels)
        return all(r.matches(present) for r in self.requirements)

    def __str__(self) -> str:
        return self.text


EVERY_NODE = Selector()


def parse_selector(text: str) -> Selector:
    """A label selector; SelectorError names the offending character."""
    return Selector(tuple(_Parser(text).requirements()), text.strip())


class _Parser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0

    def requirements(self) -> list[Requirement]:
        found: list[Requirement] = []
        self._skip_space()
        if self._at == len(self._text):
            return found
        while True:
            found.append(self._requirement())
            self._skip_space()
            if self._at == len(self._text):
                return found
            self._expect(",")

    def _requirement(self) -> Requirement:
        self._skip_space()
        if self._peek() == "!":
            self._at += 1
            key = self._key()
            self._skip_space()
            if self._at < len(self._text) and self._peek() != ",":
                raise self._error("expected ',' or the end after !key")
            return Requirement(key, "!")
        key = self._key()
        self._skip_space()
        if self._at == len(self._text) or self._peek() == ",":
            return Requirement(key, "exists")
        if self._text.startswith("==", self._at) or self._text.startswith("!=", self._at):
            op: Operator = "!=" if self._peek() == "!" else "="
            self._at += 2
            return Requirement(key, op, frozenset({self._value()}))
        if self._peek() == "=":
            self._at += 1
            return Requirement(key, "=", frozenset({self._value()}))
        if self._peek() in "<>":
            raise self._error("'<' and '>' are not supported here")
        word = self._word()
        if word not in ("in", "notin"):
            raise self._error("expected =, ==, !=, in, notin, ',' or the end", back=len(word))
        self._skip_space()
        self._expect("(")
        values = {self._value()}
        self._skip_space()
        while self._peek() == ",":
            self._at += 1
            values.add(self._value())
            self._skip_space()
        self._expect(")")
        return Requirement(key, "in" if word == "in" else "notin", frozenset(values))

    def _key(self) -> str:
        self._skip_space()
        key = self._word()
        if not key:
            raise self._error("expected a label key")
        if why := key_error(key):
            raise self._error(why, back=len(key))
        return key

    def _value(self) -> str:
        self._skip_space()
        value = self._word()
        if why := value_error(value):
            raise self._error(why, back=len(value))
        return value

    def _word(self) -> str:
        start = self._at
        while self._at < len(self._text):
            c = self._text[self._at]
            if c.isspace() or c in _SPECIAL:
                break
            self._at += 1
        return self._text[start : self._at]

    def _expect(self, symbol: str) -> None:
        self._skip_space()
        if self._peek() != symbol:
            raise self._error(f"expected {symbol!r}")
        self._at += 1

    def _peek(self) -> str:
        return self._text[self._at] if self._at < len(self._text) else ""

    def _skip_space(self) -> None:
        while self._at < len(self._text) and self._text[self._at].isspace():
            self._at += 1

    def _error(self, why: str, *, back: int = 0) -> SelectorError:
        at = self._at - back
        found = repr(self._text[at]) if at < len(self._text) else "the end"
        return SelectorError(f"at character {at + 1} ({found}) of {self._text!r}: {why}")


FieldName = Literal["status", "frps", "metadata.name"]


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """Requirements on a node's `status`, `frps` and `metadata.name`, all of which must
    hold."""

    requirements: tuple[tuple[FieldName, bool, str], ...] = ()  # (field, equal, value)

    def matches(self, fields: Callable[[FieldName], str]) -> bool:
        return all((fields(name) == value) == equal for name, equal, value in self.requirements)


_FIELDS: dict[str, FieldName] = {
    "status": "status",
    "frps": "frps",
    "metadata.name": "metadata.name",
}


def parse_field_selector(text: str, frps_names: frozenset[str]) -> FieldSelector:
    """`status=online`, `frps!=edge-a`, `metadata.name=nodemaintenances-x` (one node, as
    Kubernetes watches one object), joined by `,`; SelectorError names what is wrong."""
    found: list[tuple[FieldName, bool, str]] = []
    if not text.strip():
        return FieldSelector()
    at = 1
    for entry in text.split(","):
        where = f"at character {at} of {text!r}"
        at += len(entry) + 1
        op = "!=" if "!=" in entry else "==" if "==" in entry else "="
        name, sep, value = (part.strip() for part in entry.partition(op))
        if not sep:
            raise SelectorError(f"{where}: expected field=value or field!=value")
        if name == "status" and value not in ("online", "offline"):
            raise SelectorError(f"{where}: status is online or offline, not {value!r}")
        if name == "frps" and value not in frps_names:
            known = ", ".join(sorted(frps_names))
            raise SelectorError(f"{where}: no frps is named {value!r} (known: {known})")
        if name not in _FIELDS:
            raise SelectorError(
                f"{where}: the fields are status, frps and metadata.name, not {name!r}"
            )
        found.append((_FIELDS[name], op != "!=", value))
    return FieldSelector(tuple(found))
