"""Arguments as toxiproxy-cli reads them: Go flag spellings, ParseFloat numbers, key=value."""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

from chaos.faultproxy.ctlview import go_number

_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_HEX = re.compile(r"[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+\Z")
_SPECIAL = re.compile(r"([+-]?inf(inity)?|nan)\Z", re.IGNORECASE)


class Flags:
    """An argparse parser read as Go's flag package reads: -name or --name, -name=value.

    The first name of a flag is its long form (--name in help), the others short (-n).
    """

    def __init__(self, prog: str, usage: str, description: str = ""):
        self.parser = argparse.ArgumentParser(
            prog=prog,
            usage=usage,
            description=description,
            add_help=False,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.spelling: dict[str, str] = {}
        self.takes_value: set[str] = set()
        self.booleans: set[str] = set()

    def add(self, *names: str, **kwargs: Any) -> None:
        options = [f"--{names[0]}", *(f"-{name}" for name in names[1:])]
        for name, option in zip(names, options, strict=True):
            self.spelling[name] = option
            if kwargs.get("action") in ("store_true", "help"):
                self.booleans.add(name)
            else:
                self.takes_value.add(name)
        self.parser.add_argument(*options, **kwargs)

    def parse(self, argv: list[str], interspersed: bool = True) -> argparse.Namespace:
        return self.parser.parse_args(self.canonical(argv, interspersed))

    def canonical(self, argv: list[str], interspersed: bool) -> list[str]:
        """Respell the flags for argparse; without interspersed, stop at the first argument."""
        out: list[str] = []
        index = 0
        while index < len(argv):
            arg = argv[index]
            index += 1
            name, sep, value = arg.lstrip("-").partition("=")
            if arg == "--" or not arg.startswith("-") or name not in self.spelling:
                out.append(arg)
                if arg == "--" or (not arg.startswith("-") and not interspersed):
                    return out + argv[index:]
                continue
            option = self.spelling[name]
            if name in self.booleans and sep:
                # Go accepts -flag=true and -flag=false for booleans; argparse does not.
                if value.lower() in ("1", "t", "true"):
                    out.append(option)
                continue
            out.append(f"{option}={value}" if sep else option)
            if name in self.takes_value and not sep and index < len(argv):
                out.append(argv[index])  # the value, whatever it looks like, as Go takes it
                index += 1
        return out

    def help(self) -> str:
        return self.parser.format_help()


def parse_go_float(text: str) -> float | None:
    """Read text as Go's strconv.ParseFloat(text, 64); None where Go reports an error."""
    try:
        if _SPECIAL.match(text):
            return float(text)
        if _HEX.match(text):
            return float.fromhex(text)
        if _DECIMAL.match(text):
            number = float(text)
            return None if math.isinf(number) else number  # out of range: ErrRange in Go
    except OverflowError:
        return None
    return None


def attribute_value(text: str) -> Any:
    """A number where Go parses one (integral values as JSON integers), else the text."""
    number = parse_go_float(text)
    if number is None:
        return text
    # Go's json.Marshal writes an integral float64 without a fraction: 100, not 100.0.
    return int(number) if math.isfinite(number) and number.is_integer() else number


def parse_attributes(pairs: list[str]) -> dict[str, Any]:
    """key=value pairs as toxiproxy-cli reads them; a pair without "=" is skipped."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep:
            parsed[key] = attribute_value(value)
    return parsed


def encodable(toxic: dict[str, Any]) -> dict[str, Any]:
    """Return a toxic body, or raise ValueError as json.Marshal does for a NaN or an infinity."""
    for number in toxic["attributes"].values():
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"json: unsupported value: {go_number(number)}")
    return toxic
