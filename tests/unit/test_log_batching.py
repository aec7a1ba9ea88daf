"""The service's log handler writes lines in batches without reordering or holding problems."""

from __future__ import annotations

import io
import json
import logging
import sys
import time

from service.logs import BatchingStreamHandler, JsonFormatter


class CountingStream(io.StringIO):
    """A text stream that counts the writes it receives."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(capacity: int, flush_s: float = 60.0) -> tuple[logging.Logger, CountingStream]:
    stream = CountingStream()
    handler = BatchingStreamHandler(stream, capacity, flush_s)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"reco.test.batching.{capacity}.{flush_s}.{time.monotonic_ns()}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def _messages(stream: CountingStream) -> list[str]:
    return [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]


def test_info_lines_are_written_once_per_batch():
    logger, stream = _logger(capacity=4)
    for i in range(10):
        logger.info(f"request {i}")
    assert _messages(stream) == [f"request {i}" for i in range(8)]
    assert stream.writes == 2
    logger.handlers[0].flush()
    assert _messages(stream) == [f"request {i}" for i in range(10)]


def test_a_warning_is_written_at_once_after_the_lines_before_it():
    logger, stream = _logger(capacity=100)
    logger.info("first")
    logger.info("second")
    assert stream.getvalue() == ""
    logger.warning("problem")
    assert _messages(stream) == ["first", "second", "problem"]


def test_an_idle_buffer_is_written_within_the_flush_interval():
    logger, stream = _logger(capacity=100, flush_s=0.05)
    logger.info("lonely")
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _messages(stream) == ["lonely"]


def test_capacity_one_writes_every_line():
    logger, stream = _logger(capacity=1)
    logger.info("a")
    logger.info("b")
    assert _messages(stream) == ["a", "b"] and stream.writes == 2


def _failure_record() -> logging.LogRecord:
    try:
        raise ValueError("value 'canary-4711' rejected")
    except ValueError:
        return logging.makeLogRecord(
            {"name": "reco.x", "levelname": "ERROR", "msg": "failed", "exc_info": sys.exc_info()}
        )


def test_the_api_names_an_exceptions_type_and_the_workers_add_its_message():
    from workers.logs import JsonFormatter as WorkerFormatter

    api_line = json.loads(JsonFormatter().format(_failure_record()))
    assert api_line["error"] == "ValueError"
    assert "error_detail" not in api_line and "canary-4711" not in json.dumps(api_line)
    worker_line = json.loads(WorkerFormatter().format(_failure_record()))
    assert worker_line["error_detail"] == "value 'canary-4711' rejected"
    assert worker_line["pid"] and worker_line["logger"] == "reco.x"
