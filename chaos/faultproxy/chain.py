"""A proxy's toxics: one ordered chain per direction, changed live on every open link."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chaos.faultproxy import errors
from chaos.faultproxy.errors import ApiError
from chaos.faultproxy.gojson import (
    DecodeError,
    Float32,
    Pairs,
    decode_first,
    decode_struct,
    match_key,
)
from chaos.faultproxy.toxics import ATTRIBUTES, DIRECTIONS, Toxic, check_attributes

if TYPE_CHECKING:
    from chaos.faultproxy.link import Link
    from chaos.faultproxy.proxy import Proxy

TOXIC_FIELDS = {
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
    "attributes": "object",
}
UPDATE_FIELDS = {"attributes": "object", "toxicity": "float32"}


def _attribute_objects(value: Any) -> list[Pairs]:
    # Go decodes the body a second time into {attributes}; every matching key applies in turn.
    if not isinstance(value, Pairs):
        return []
    return [item for key, item in value if match_key(key, {"attributes": ""}) and item is not None]


def _decode_attributes(value: Any, type_: str, attrs: dict[str, int]) -> dict[str, int]:
    fields = {name: "int64" for name in ATTRIBUTES[type_]}
    for obj in _attribute_objects(value):
        decode_struct(obj, fields, ".attributes", f"toxics.{type_}", attrs)
    return attrs


class ToxicChain:
    """Hold the upstream and downstream chains and apply every change to live links."""

    def __init__(self, proxy: Proxy):
        self.proxy = proxy
        self.chains: dict[str, list[Toxic]] = {d: [] for d in DIRECTIONS}

    def chain(self, direction: str) -> list[Toxic]:
        """Return a copy of one direction's chain, for a new link."""
        return list(self.chains[direction])

    def all(self) -> list[Toxic]:
        """Return upstream toxics then downstream toxics, each in insertion order."""
        return self.chains["upstream"] + self.chains["downstream"]

    def has_type(self, type_: str) -> bool:
        return any(toxic.type == type_ for toxic in self.all())

    def to_json(self) -> list[dict[str, Any]]:
        return [toxic.to_json() for toxic in self.all()]

    def find(self, name: str) -> Toxic | None:
        for toxic in self.all():
            if toxic.name == name:
                return toxic
        return None

    def get(self, name: str) -> Toxic:
        toxic = self.find(name)
        if toxic is None:
            raise ApiError(*errors.TOXIC_NOT_FOUND)
        return toxic

    def _links(self, direction: str) -> Iterator[Link]:
        for conn in list(self.proxy.connections):
            link = conn.links.get(direction)
            if link is not None:
                yield link

    def add_json(self, body: bytes) -> Toxic:
        """Create a toxic from a request body, checking in Go's order."""
        defaults = {"name": "", "type": "", "stream": "downstream", "toxicity": Float32(1.0)}
        try:
            value = decode_first(body)
            fields = decode_struct(
                value, TOXIC_FIELDS, "ToxicWrapper", "toxics.ToxicWrapper", defaults
            )
        except DecodeError as exc:
            raise errors.bad_body(exc) from None
        stream = fields["stream"]
        if stream.lower() not in DIRECTIONS:
            raise ApiError(*errors.INVALID_STREAM)
        type_ = fields["type"]
        name = fields["name"] or f"{type_}_{stream}"
        if type_ not in ATTRIBUTES:
            raise ApiError(*errors.INVALID_TYPE)
        if self.find(name) is not None:
            raise ApiError(*errors.TOXIC_EXISTS)
        try:
            attrs = _decode_attributes(value, type_, {a: 0 for a in ATTRIBUTES[type_]})
        except DecodeError as exc:
            raise errors.bad_body(exc) from None
        problem = check_attributes(type_, attrs)
        if problem:
            raise ApiError(400, problem)
        toxic = Toxic(name, type_, stream, fields["toxicity"], attrs)
        self.chains[toxic.direction].append(toxic)
        for link in self._links(toxic.direction):
            link.add_toxic(toxic)
        return toxic

    def update_json(self, name: str, body: bytes) -> Toxic:
        """Merge new attributes and toxicity into a toxic and restart it on every link."""
        toxic = self.get(name)
        try:
            value = decode_first(body)
            fields = decode_struct(
                value, UPDATE_FIELDS, "", "struct", {"toxicity": Float32(toxic.toxicity)}
            )
            attrs = _decode_attributes(value, toxic.type, dict(toxic.attributes))
        except DecodeError as exc:
            # Unlike Go, nothing is applied when any field is bad.
            raise errors.bad_body(exc) from None
        problem = check_attributes(toxic.type, attrs)
        if problem:
            raise ApiError(400, problem)
        toxic.attributes = attrs
        toxic.toxicity = fields["toxicity"]
        for link in self._links(toxic.direction):
            link.update_toxic(toxic)
        return toxic

    def remove(self, name: str) -> None:
        """Take a toxic out of its chain and off every live link."""
        toxic = self.get(name)
        self.chains[toxic.direction].remove(toxic)
        for link in self._links(toxic.direction):
            link.remove_toxic(toxic)

    def reset(self) -> None:
        """Remove every toxic, front first, as Go's ResetToxics does."""
        for direction in DIRECTIONS:
            while self.chains[direction]:
                self.remove(self.chains[direction][0].name)
