"""Drive wrk (HTTP load generator) and parse its report."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

POST_EVENTS_LUA = r"""
local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%x", v)
  end))
end
init = function(args)
  math.randomseed(os.time() + tonumber(string.sub(tostring({}), 8), 16))
end
request = function()
  local body = '{"events":[{"event_id":"' .. uuid() .. '","user_id":"u-' .. math.random(1, 1000)
    .. '","item_id":' .. math.random(1, 5000)
    .. ',"kind":"view","occurred_at":"2026-11-29T10:00:00Z"}]}'
  return wrk.format("POST", wrk.path, {["Content-Type"] = "application/json",
    ["X-API-Key"] = "dev-key", ["Idempotency-Key"] = '"' .. uuid() .. '"'}, body)
end
"""

GET_USERS_LUA = r"""
init = function(args)
  math.randomseed(os.time() + tonumber(string.sub(tostring({}), 8), 16))
end
request = function()
  local path = string.gsub(wrk.path, "{user}", "u-" .. math.random(1, 1000))
  return wrk.format("GET", path, {["X-API-Key"] = "dev-key"})
end
"""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """Throughput, latency percentiles (ms) and error count of one wrk run."""

    rps: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse(output: str) -> WrkResult:
    """Parse `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets:
        errors += sum(int(x) for x in sockets.groups())
    p50 = re.search(r"50%\s+([\d.]+(?:us|ms|s))", output)
    p99 = re.search(r"99%\s+([\d.]+(?:us|ms|s))", output)
    return WrkResult(
        rps, total, errors, _ms(p50.group(1)) if p50 else 0.0, _ms(p99.group(1)) if p99 else 0.0
    )


def run(
    url: str, duration_s: float, connections: int = 16, lua: str | None = None, threads: int = 1
) -> WrkResult:
    """Run wrk against ``url`` (loopback only) and return its parsed report."""
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ValueError("load goes to loopback addresses only")
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if lua:
            script = Path(tmp, "script.lua")
            script.write_text(lua)
            argv += ["-s", str(script)]
        result = subprocess.run(  # noqa: S603 - wrk with a loopback URL built here
            argv + [url], capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.strip()}")
    return parse(result.stdout)
