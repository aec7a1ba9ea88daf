"""Versioned domain events and their AMQP message encoding (catalogue: docs/events.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, ClassVar

import orjson

KINDS = ("view", "click", "purchase")
# How much one interaction of each kind adds to popularity score and category affinity.
KIND_WEIGHTS = {"view": 1.0, "click": 3.0, "purchase": 10.0}
CONTENT_TYPE = "application/json"
MAX_MESSAGE_BYTES = 16_384


class PoisonMessage(ValueError):
    """A message that can never be applied: undecodable, unknown type/version or invalid."""


@dataclasses.dataclass(frozen=True)
class InteractionRecorded:
    """A user interacted with an item (view, click or purchase)."""

    TYPE: ClassVar[str] = "interaction.recorded"
    VERSION: ClassVar[int] = 1

    event_id: str
    client_id: str
    user_id: str
    item_id: int
    kind: str
    occurred_at: str

    @property
    def routing_key(self) -> str:
        return f"{self.TYPE}.{self.kind}"

    def to_payload(self) -> bytes:
        """Encode the body: the event fields plus its type and version."""
        # Spelled out: dataclasses.asdict deep-copies every field and costs ten times more.
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "client_id": self.client_id,
                "user_id": self.user_id,
                "item_id": self.item_id,
                "kind": self.kind,
                "occurred_at": self.occurred_at,
                "type": self.TYPE,
                "version": self.VERSION,
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> InteractionRecorded:
        """Decode and validate a body; raise PoisonMessage with the reason when it cannot be."""
        if len(payload) > MAX_MESSAGE_BYTES:
            raise PoisonMessage(f"body larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PoisonMessage(f"undecodable body: {exc}") from None
        if not isinstance(body, dict):
            raise PoisonMessage("body is not a JSON object")
        if body.get("type") != cls.TYPE:
            raise PoisonMessage(f"unknown event type {body.get('type')!r}")
        if body.get("version") != cls.VERSION:
            raise PoisonMessage(f"unsupported version {body.get('version')!r} of {cls.TYPE}")
        return cls._validated(body)

    @classmethod
    def _validated(cls, body: dict[str, Any]) -> InteractionRecorded:
        try:
            event = cls(
                event_id=str(uuid.UUID(body["event_id"])),
                client_id=_text(body["client_id"], 64),
                user_id=_text(body["user_id"], 128),
                item_id=body["item_id"],
                kind=body["kind"],
                occurred_at=body["occurred_at"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PoisonMessage(f"invalid {cls.TYPE}: {exc!r}") from None
        if type(event.item_id) is not int or not 1 <= event.item_id <= 2**62:
            raise PoisonMessage("invalid item_id")
        if event.kind not in KINDS:
            raise PoisonMessage(f"invalid kind {event.kind!r}")
        try:
            dt.datetime.fromisoformat(event.occurred_at)
        except (TypeError, ValueError):
            raise PoisonMessage("invalid occurred_at") from None
        return event


def _text(value: Any, max_len: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ValueError(f"expected a string of 1..{max_len} characters")
    return value


def message_properties(event_id: str, event_type: str, headers: dict[str, Any]) -> dict[str, Any]:
    """AMQP properties for an outbox row: message_id = event id, type = event type."""
    return {
        "message_id": event_id,
        "type": event_type,
        "content_type": CONTENT_TYPE,
        "delivery_mode": 2,
        "headers": headers,
        "correlation_id": headers.get("correlation_id") or headers.get("request_id"),
    }


def decode(message_type: str | None, payload: bytes) -> InteractionRecorded:
    """Decode a delivered message by its type; raise PoisonMessage for anything unknown."""
    if message_type not in (None, InteractionRecorded.TYPE):
        raise PoisonMessage(f"unknown message type {message_type!r}")
    return InteractionRecorded.from_payload(payload)
