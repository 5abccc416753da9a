"""Stopping background tasks for sure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one is done.

    The cancel is repeated until it takes: on Python 3.11 ``asyncio.wait_for`` (which redis-py
    wraps around every command it sends) swallows a cancel that arrives just as its inner call
    completes (CPython gh-86296), so one cancel can leave a loop running forever: a pump that
    was checking a budget, or a heartbeat that then holds the process's shutdown.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # finish stopping even if cancelled
            _, pending = await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the caller logged what mattered
