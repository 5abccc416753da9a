"""The quick start as a new user runs it: `realtime-gateway serve --demo` with nothing else
configured (embedded store, built-in simulator), then the printed snippets, unchanged."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.servers import free_port, wait_for_port


def _read_until(path: Path, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if marker in text:
            return text
        time.sleep(0.05)
    raise TimeoutError(f"{marker!r} never appeared in {path}")


def test_the_printed_quick_start_works(tmp_path: Path, process_log: Callable[[str], Path]) -> None:
    port = free_port()
    # stdout carries the demo key on purpose (shown once); the logs (stderr) must not.
    out, err = tmp_path / "stdout.txt", process_log("quickstart")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_PORT": str(port), "GATEWAY_SIM_SPEED": "0"})
    exe = Path(sys.executable).parent / "realtime-gateway"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(exe), "serve", "--demo"], env=env, stdout=stdout, stderr=stderr
        )
    try:
        wait_for_port(port, timeout=20)
        text = _read_until(out, "See what it cost", timeout=10)
        key = re.search(r"export RGW_KEY=(\S+)", text)
        assert key, text
        snippet = re.search(r"python3 - <<'PY'\n(.*?)\nPY\n", text, re.S)
        assert snippet, text
        run = subprocess.run(
            [sys.executable, "-c", snippet.group(1)],
            env={**env, "RGW_KEY": key.group(1)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert "usage:" in run.stdout
        usage = httpx.get(
            f"http://127.0.0.1:{port}/v1/usage",
            headers={"Authorization": f"Bearer {key.group(1)}"},
            timeout=10,
        ).json()
        assert usage["total"]["responses"] == 1
        assert usage["total"]["tokens"] > 0
    finally:
        proc.terminate()
        proc.wait(30)
    assert "built-in simulator" in err.read_text()
