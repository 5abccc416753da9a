from __future__ import annotations

import collections
import itertools
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.logs import JsonFormatter
from tests.support.gateway import ADMIN_KEY
from tests.support.servers import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server shared by the run; tests that need a clean one flush it."""
    with RedisServer().running() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flushall()
    return redis_server.url


# --- no secret in any log line of the suite ----------------------------------------------------
#
# Every record any logger emits during the run goes through ``LogCollector``: it is formatted
# with the gateway's own JsonFormatter (what production writes) and that line is checked for
# secrets; records of the gateway's own loggers are also checked *before* scrubbing (message,
# arguments, context fields, traceback), because the scrubber is a last line of defence, not a
# licence to log secrets. Logs of gateway subprocesses are checked too: write them where
# ``process_log`` says. The check runs when the session ends.

# The secrets the suite uses, by shape: client secrets, tenant keys, simulator keys; and literally
# the admin key and hash pepper of tests/support/gateway.py.
SECRET_SHAPES = re.compile(
    r"ek_[A-Za-z0-9_-]{20,}|rgw_sk_[A-Za-z0-9_-]{8,}|sk-sim-[A-Za-z0-9_-]+"
    + "|"
    + "|".join(re.escape(s) for s in (ADMIN_KEY, "test-pepper-0123456789"))
)


class LogCollector(logging.Handler):
    """Checks every record for secrets, keeping only the offending lines and some counts."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.json = JsonFormatter("pytest")
        self.records = 0
        self.by_logger: dict[str, int] = {}
        self.leaks: list[str] = []  # formatted lines that show a secret
        self.raw_leaks: list[str] = []  # gateway records that carried one before scrubbing
        self.files: list[Path] = []
        # The last formatted lines with their record numbers (for tests of this mechanism).
        self.recent: collections.deque[tuple[int, str]] = collections.deque(maxlen=2000)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.json.format(record)
        except Exception as exc:  # a record that cannot be formatted is a finding too
            line = f"<unformattable record from {record.name}: {exc!r}>"
        self.records += 1
        self.by_logger[record.name] = self.by_logger.get(record.name, 0) + 1
        self.recent.append((self.records, line))
        if SECRET_SHAPES.search(line):
            self.leaks.append(line)
        if record.name.startswith("gateway"):
            raw = _raw_text(record)
            if SECRET_SHAPES.search(raw):
                self.raw_leaks.append(f"{record.name}: {raw[:2000]}")

    def lines_since(self, mark: int) -> list[str]:
        """Formatted lines of the records after ``mark`` (a value of ``records``)."""
        return [line for number, line in self.recent if number > mark]

    def forget(self, marker: str) -> None:
        """Drop findings that contain ``marker`` (a test of this mechanism planted them)."""
        self.leaks = [x for x in self.leaks if marker not in x]
        self.raw_leaks = [x for x in self.raw_leaks if marker not in x]

    def file_leaks(self) -> tuple[int, list[str]]:
        lines, leaks = 0, []
        for path in self.files:
            if not path.exists():
                continue
            for number, line in enumerate(path.read_text("utf-8", "replace").splitlines(), 1):
                lines += 1
                if SECRET_SHAPES.search(line):
                    leaks.append(f"{path}:{number}: {line[:2000]}")
        return lines, leaks


def _raw_text(record: logging.LogRecord) -> str:
    parts: list[Any] = [record.msg]
    args = record.args
    if isinstance(args, dict):
        parts += list(args.values())
    elif args:
        parts += list(args)
    parts += [v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return " ".join(str(p) for p in parts)


_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@pytest.fixture(scope="session", autouse=True)
def log_collector(request: pytest.FixtureRequest) -> Iterator[LogCollector]:
    collector = LogCollector()
    root = logging.getLogger()
    saved = (root.level, logging.getLogger("gateway").level)
    root.addHandler(collector)
    # INFO is what a gateway logs in production; the gateway's own DEBUG records are checked too.
    root.setLevel(logging.INFO)
    logging.getLogger("gateway").setLevel(logging.DEBUG)
    # A canary through a gateway logger: proves the collector sees gateway records even in a
    # run whose tests log nothing, so the secret checks below cannot pass vacuously.
    logging.getLogger("gateway.tests").info("log collector canary")
    try:
        yield collector
    finally:
        attached = collector in root.handlers
        root.removeHandler(collector)
        root.setLevel(saved[0])
        logging.getLogger("gateway").setLevel(saved[1])
    lines, file_leaks = collector.file_leaks()
    assert attached, "the log collector was removed from the root logger during the run"
    assert collector.records > 0, "not even the canary record was collected"
    assert not collector.leaks, "secrets in log lines:\n" + "\n".join(collector.leaks[:20])
    assert not collector.raw_leaks, (
        "the gateway passed secrets to its loggers (scrubbed on output, but they must not be "
        "logged at all):\n" + "\n".join(collector.raw_leaks[:20])
    )
    assert not file_leaks, "secrets in subprocess logs:\n" + "\n".join(file_leaks[:20])
    if any(path.exists() for path in collector.files):
        assert lines > 0, "subprocess logs were registered but all are empty"


_log_numbers = itertools.count()


@pytest.fixture
def process_log(
    log_collector: LogCollector, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``process_log("gateway-a")``: a path for a subprocess's log, checked for secrets at the
    end of the run like every in-process record."""
    directory = tmp_path_factory.getbasetemp() / "process-logs"
    directory.mkdir(exist_ok=True)

    def make(name: str) -> Path:
        path = directory / f"{next(_log_numbers):04d}-{name}.log"
        log_collector.files.append(path)
        return path

    return make


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test runs on uvloop, the loop `realtime-gateway serve` runs on: transports
    differ between the two loops (uvloop's are not asyncio.Transport subclasses)."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
