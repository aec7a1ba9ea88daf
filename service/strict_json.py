"""Strict JSON decoding: reject what json.loads tolerates but the API must not accept."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 16
MAX_INT_DIGITS = 20


class JsonRejected(ValueError):
    """The body is not acceptable JSON; the message says why."""


def _no_constants(name: str) -> Any:
    raise JsonRejected(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonRejected(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JsonRejected("number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonRejected(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_strings_and_depth(root: Any) -> None:
    """Walk iteratively: no NUL characters, no lone surrogates, bounded nesting."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JsonRejected(f"nesting deeper than {MAX_DEPTH}")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise JsonRejected("NUL character in a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRejected("lone surrogate in a string") from None


def loads(raw: bytes) -> Any:
    """Decode UTF-8 JSON strictly or raise JsonRejected."""
    # Refuse deep nesting at the start before the recursive decoder descends into it; only
    # the brackets count (whitespace between them is valid however long it is).
    lead = raw[: len(raw) - len(raw.lstrip(b"[{ \t\r\n"))]
    if lead.count(b"[") + lead.count(b"{") > MAX_DEPTH:
        raise JsonRejected(f"nesting deeper than {MAX_DEPTH}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRejected("body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise JsonRejected("byte order mark before JSON")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except JsonRejected:
        raise
    except RecursionError:
        raise JsonRejected(f"nesting deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise JsonRejected(f"malformed JSON: {exc}") from None
    _check_strings_and_depth(value)
    return value
