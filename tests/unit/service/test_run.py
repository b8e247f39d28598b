"""The service's process-wide behaviour (app.service.run) that needs no broker."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from app.service import run


def test_a_library_thread_that_dies_is_one_error_line_with_the_traceback_only_at_debug(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's consumer thread ends with CancelledError when stopped while the brokers are down."""
    monkeypatch.setattr(threading, "excepthook", run._log_thread_failure)

    def stopped_while_fetching() -> None:
        raise asyncio.CancelledError("fetch cancelled")

    with caplog.at_level(logging.DEBUG, logger="eqlstream"):
        thread = threading.Thread(target=stopped_while_fetching, name="Thread-4")
        thread.start()
        thread.join()
    errors = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in errors] == ["thread Thread-4 ended with CancelledError: fetch cancelled"]
    assert errors[0].exc_info is None
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.exc_info is not None and debug.exc_info[0] is asyncio.CancelledError
