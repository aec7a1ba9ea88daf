"""Decode and encode JSON the way Go's encoding/json does, so clients see the same wire."""

from __future__ import annotations

import decimal
import json
import math
import re
import struct
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Go's ParseFloat(s, 32) overflows from half an ulp above the largest float32 (ties round up).
FLOAT32_OVERFLOW = decimal.Decimal(2**128 - 2**103)
FLOAT32_MAX = float(2**128 - 2**104)
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")


class DecodeError(ValueError):
    """A JSON error whose text is what Go's decoder would report."""


class Number(str):
    """A JSON number kept as its literal text, so int64 rules can be checked exactly."""


class Pairs(list):
    """A JSON object as ordered (key, value) pairs; duplicates are kept like Go sees them."""


class Float32(float):
    """A float that is printed in Go's shortest float32 form."""


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid character '{name[0]}' looking for beginning of value")


_DECODER = json.JSONDecoder(
    parse_float=Number,
    parse_int=Number,
    parse_constant=_reject_constant,
    object_pairs_hook=Pairs,
    strict=True,
)


def decode_first(body: bytes) -> Any:
    """Return the first JSON value in body, ignoring what follows it (Go Decoder.Decode)."""
    text = body.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise DecodeError("EOF")
    try:
        value, _end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip(" \t\r\n")):
            raise DecodeError("unexpected EOF") from None
        char = text[exc.pos]
        raise DecodeError(f"invalid character {char!r} looking for beginning of value") from None
    except RecursionError as exc:
        # Python's parser recurses and gives up near 1000 levels; Go's scanner refuses
        # nesting past 10000 with this error, naming the bracket that went too deep.
        char = "{" if "JSON object" in str(exc) else "["
        raise DecodeError(f"invalid character {char!r} exceeded max depth") from None
    return value


def kind_of(value: Any) -> str:
    """Name a JSON value's kind as Go's UnmarshalTypeError does."""
    if isinstance(value, Number):
        return "number"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Pairs):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _type_error(value: Any, where: str, gotype: str, literal: bool = False) -> DecodeError:
    what = kind_of(value)
    if literal and isinstance(value, Number):
        what = f"number {value}"
    return DecodeError(
        f"json: cannot unmarshal {what} into Go struct field {where} of type {gotype}"
    )


def convert(value: Any, kind: str, where: str) -> Any:
    """Convert one decoded value to a Go field kind, or raise Go's type error."""
    if kind == "string":
        if isinstance(value, str) and not isinstance(value, Number):
            return _SURROGATE.sub("\ufffd", value)
        raise _type_error(value, where, "string")
    if kind in ("bool", "nbool"):
        if isinstance(value, bool):
            return value
        raise _type_error(value, where, "bool" if kind == "bool" else "*bool")
    if kind == "int64":
        # An int64 has at most 19 digits; checking first keeps int() off literals longer
        # than Python converts (4300 digits), which would raise instead of Go's type error.
        if isinstance(value, Number) and _INTEGER.match(value) and len(value) <= 20:
            number = int(value)
            if INT64_MIN <= number <= INT64_MAX:
                return number
        raise _type_error(value, where, "int64", literal=True)
    if kind == "float32":
        if isinstance(value, Number):
            try:
                return Float32(parse_float32(value))
            except OverflowError:
                pass
        raise _type_error(value, where, "float32", literal=True)
    if kind == "object":
        if isinstance(value, Pairs):
            return value
        raise _type_error(value, where, "toxics.NoopToxic")
    raise ValueError(f"unknown field kind {kind}")


def match_key(key: str, fields: dict[str, str]) -> str | None:
    """Find the field a JSON key sets: exact name first, else a case-insensitive match."""
    if key in fields:
        return key
    folded = key.casefold()
    for name in fields:
        if name.casefold() == folded:
            return name
    return None


def decode_struct(
    value: Any, fields: dict[str, str], struct_name: str, gotype: str, target: dict[str, Any]
) -> dict[str, Any]:
    """Assign a JSON object's matching keys onto target like Go's Unmarshal into a struct."""
    if value is None:
        return target
    if not isinstance(value, Pairs):
        raise DecodeError(f"json: cannot unmarshal {kind_of(value)} into Go value of type {gotype}")
    for key, item in value:
        name = match_key(key, fields)
        if name is None:
            continue
        if item is None:
            # Go leaves a non-pointer field alone on null; a pointer field becomes nil.
            if fields[name] == "nbool":
                target[name] = None
            continue
        target[name] = convert(item, fields[name], f"{struct_name}.{name}")
    return target


def parse_float32(literal: str) -> float:
    """Read a JSON number as Go's ParseFloat(s, 32); raise OverflowError past float32's range."""
    # Exact on the literal: struct.pack("f") turns an out-of-range double into infinity.
    if decimal.Decimal(literal).copy_abs() >= FLOAT32_OVERFLOW:
        raise OverflowError(f"{literal} is out of float32 range")
    value = to_float32(float(literal))
    # Rounding to a double first can land on the overflow tie; below it Go gives the maximum.
    return math.copysign(FLOAT32_MAX, value) if math.isinf(value) else value


def to_float32(number: float) -> float:
    """Round a Python float to the nearest float32 (infinity past its range)."""
    return struct.unpack("f", struct.pack("f", number))[0]


def format_float32(number: float) -> str:
    """Print a float32 in Go's shortest form: 1, 0.5, 0.2, 1e-7."""
    if number == 0:
        return "-0" if str(number).startswith("-") else "0"
    value = to_float32(number)
    text = repr(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if to_float32(float(text)) == value:
            break
    exact = decimal.Decimal(text)
    if 1e-6 <= abs(value) < 1e21:
        return format(exact, "f")
    sign, digit_tuple, exponent = exact.normalize().as_tuple()
    digits_text = "".join(map(str, digit_tuple))
    power = exponent + len(digits_text) - 1
    mantissa = digits_text[0] + ("." + digits_text[1:] if len(digits_text) > 1 else "")
    # Go writes e-07 then trims the leading zero of a negative two-digit exponent.
    suffix = f"e-{-power}" if power < 0 else f"e+{power:02d}"
    return ("-" if sign else "") + mantissa + suffix


def _string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    # Go escapes HTML-sensitive characters and JS line separators inside strings.
    return (
        encoded.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def dumps(value: Any) -> str:
    """Encode value compactly, keeping dict order, as Go's json.Marshal would."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Float32):
        return format_float32(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(value: Any) -> bytes:
    """Encode value to UTF-8 bytes (see dumps)."""
    return dumps(value).encode("utf-8")
