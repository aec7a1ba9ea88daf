"""What the command-line client prints: toxiproxy-cli 2.12's layouts, colour only on a terminal."""

from __future__ import annotations

import decimal
import math
import os
from dataclasses import dataclass
from typing import Any, TextIO

RED, GREEN, YELLOW = "\x1b[31m", "\x1b[32m", "\x1b[33m"
BLUE, PURPLE, NONE = "\x1b[34m", "\x1b[35m", "\x1b[0m"


@dataclass(frozen=True)
class Style:
    """A terminal gets headers, hints and aligned columns; colour also needs NO_COLOR unset."""

    tty: bool
    colour: bool

    @classmethod
    def of(cls, stream: TextIO) -> Style:
        tty = stream.isatty()
        return cls(tty, tty and not os.environ.get("NO_COLOR"))

    def paint(self, code: str) -> str:
        return code if self.colour else ""

    def hint(self, message: str) -> str:
        return f"\n{self.paint(NONE)}Hint: {message}\n" if self.tty else ""

    def cell(self, code: str, text: str, tabs: int) -> str:
        """A column padded to `tabs` tab stops on a terminal, else one tab after it."""
        pad = max(tabs - len(text.encode()) // 8 - 1, 0) if self.tty else 0
        return f"{self.paint(code)}{text}{self.paint(NONE)}\t" + "\t" * pad

    def enabled(self, enabled: bool) -> tuple[str, str]:
        """The colour and word for a proxy's enabled flag."""
        return (self.paint(GREEN), "enabled") if enabled else (self.paint(RED), "disabled")


def go_number(value: Any) -> str:
    """Print an attribute value as Go's fmt.Print does a float64: 100, 0.5, 1e+06, 1.5e-05."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, int | float):
        return str(value)  # Go's CLI only ever meets numbers here
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "-0" if math.copysign(1, number) < 0 else "0"
    sign, digit_tuple, exponent = decimal.Decimal(repr(number)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # digits before the decimal point
    # Go's shortest %v switches to an exponent below 1e-4 and from 1e6 (precision 6).
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        power = point - 1
        text = f"{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return ("-" if sign else "") + text


def render_list(proxies: dict[str, dict[str, Any]], style: Style) -> str:
    """The `list` table: one line per proxy, sorted by name."""
    paint = style.paint
    out = []
    if style.tty:
        out.append(
            f"{paint(GREEN)}Name\t\t\t{paint(BLUE)}Listen\t\t{paint(YELLOW)}Upstream\t\t"
            f"{paint(PURPLE)}Enabled\t\t{paint(RED)}Toxics\n{paint(NONE)}"
        )
        out.append(f"{paint(NONE)}{'=' * 86}\n")
        if not proxies:
            out.append(f"{paint(RED)}no proxies\n{paint(NONE)}")
            out.append(style.hint("create a proxy with `toxiproxy-cli create`"))
            return "".join(out)
    for name in sorted(proxies):
        proxy = proxies[name]
        count = len(proxy.get("toxics") or [])
        colour, word = style.enabled(proxy["enabled"])
        out += [
            style.cell(colour, proxy["name"], 3),
            style.cell(BLUE, proxy["listen"], 2),
            style.cell(YELLOW, proxy["upstream"], 3),
            style.cell(PURPLE, word, 2),
            f"{paint(RED)}{'None' if count == 0 and style.tty else count}{paint(NONE)}\n",
        ]
    out.append(style.hint("inspect toxics with `toxiproxy-cli inspect <proxyName>`"))
    return "".join(out)


def render_toxics(toxics: list[dict[str, Any]], stream: str, style: Style) -> str:
    """One line per toxic; on a terminal under a heading naming the stream."""
    paint = style.paint
    out = []
    if style.tty:
        out.append(f"{paint(GREEN)}{stream} toxics:\n{paint(NONE)}")
        if not toxics:
            return (
                "".join(out) + f"{paint(RED)}Proxy has no {stream} toxics enabled.\n{paint(NONE)}"
            )
    for toxic in toxics:
        label = f"{paint(BLUE)}{toxic['name']}:{paint(NONE)}" if style.tty else toxic["name"]
        attributes = sorted((toxic.get("attributes") or {}).items())
        out.append(
            f"{label}\ttype={toxic['type']}\tstream={toxic['stream']}\t"
            f"toxicity={toxic['toxicity']:.2f}\tattributes=["
            + "".join(f"\t{key}={go_number(value)}" for key, value in attributes)
            + "\t]\n"
        )
    return "".join(out)


def render_inspect(proxy: dict[str, Any], style: Style) -> str:
    """The `inspect` view: on a terminal a header and toxics per stream, else toxic lines only."""
    toxics = proxy.get("toxics") or []
    if not style.tty:
        return render_toxics(toxics, "", style)
    paint = style.paint
    out = [
        f"{paint(PURPLE)}Name: {paint(NONE)}{proxy['name']}\t",
        f"{paint(BLUE)}Listen: {paint(NONE)}{proxy['listen']}\t",
        f"{paint(YELLOW)}Upstream: {paint(NONE)}{proxy['upstream']}\n",
        f"{paint(NONE)}{'=' * 70}\n",
    ]
    if not toxics:
        out.append(f"{paint(RED)}Proxy has no toxics enabled.\n{paint(NONE)}")
    else:
        upstream = [t for t in toxics if t["stream"] == "upstream"]
        downstream = [t for t in toxics if t["stream"] != "upstream"]
        out.append(render_toxics(upstream, "Upstream", style) + "\n")
        out.append(render_toxics(downstream, "Downstream", style))
    out.append(style.hint("add a toxic with `toxiproxy-cli toxic add`"))
    return "".join(out)


def render_toggled(name: str, enabled: bool, style: Style) -> str:
    colour, word = style.enabled(enabled)
    return f"Proxy {colour}{name}{style.paint(NONE)} is now {colour}{word}{style.paint(NONE)}\n"
