"""Background threads through an outage of their dependency: a log line when it starts and ends, backoff."""

from __future__ import annotations

import logging
import threading

import pytest

from lightfast_cloud.outages import Outage, loop_forever


def test_an_outage_is_logged_once_with_growing_delays_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage("the thing", logger=logging.getLogger("test.outages"), first_delay_s=0.5, max_delay_s=4.0)
    with caplog.at_level("WARNING", logger="test.outages"):
        delays = [outage.failed(ConnectionError("refused")) for _ in range(6)]
        assert outage.ongoing
        outage.recovered()
        outage.recovered()
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not outage.ongoing
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("the thing failing (ConnectionError: refused)")
    assert lines[1].startswith("the thing recovered after") and lines[1].endswith("(6 failed tries)")


def test_a_loop_survives_any_exception_of_its_step_and_resumes(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    passes: list[int] = []

    def step() -> None:
        passes.append(len(passes))
        if len(passes) <= 3:
            raise [TimeoutError("timed out"), RuntimeError("a bug"), KeyError("gone")][len(passes) - 1]
        if len(passes) == 5:
            stop.set()

    outage = Outage(
        "a step", logger=logging.getLogger("test.outages"), first_delay_s=0.001, max_delay_s=0.001
    )
    with caplog.at_level("WARNING", logger="test.outages"):
        loop_forever(step, outage=outage, interval_s=0.001, stop=stop)
    assert len(passes) == 5
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("a step failing (TimeoutError: timed out)")
    assert lines[1].startswith("a step recovered after") and lines[1].endswith("(3 failed tries)")
