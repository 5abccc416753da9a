"""``loadtest/bench.py --quick``: all three targets (direct, nginx, gateway with real Redis)
for 20 sessions and a 5 s window, then the BENCHMARKS.json rows and BENCHMARKS.md it writes.

Quick mode checks the harness, not the gateway's performance: the values only have to be
sane (present, positive where they must be, no session lost, no error).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from loadtest import targets

REQUIRED = (
    "target",
    "sessions",
    "added_rtt_p50_ms",
    "added_rtt_p99_ms",
    "cpu_us_per_msg",
    "rss_kib_per_session",
    "open_p50_ms",
    "open_p99_ms",
    "ttfa_p50_ms",
)


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], str]:
    # The same binaries the benchmark needs: a missing one fails here, loudly.
    targets.find_binary("nginx", "nginx")
    targets.find_binary("redis-server", "redis-server")
    out = tmp_path_factory.mktemp("bench")
    md, js = out / "BENCHMARKS.md", out / "BENCHMARKS.json"
    out_args = ["--out-md", str(md), "--out-json", str(js)]
    done = subprocess.run(
        [sys.executable, str(targets.LOADTEST / "bench.py"), "--quick", *out_args],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=targets.REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(js.read_text()), md.read_text()


@pytest.mark.timeout(150)
def test_quick_bench_writes_a_row_per_target(quick_bench: tuple[list[dict[str, Any]], str]) -> None:
    rows, _ = quick_bench
    assert [(r["target"], r["sessions"]) for r in rows] == [
        ("direct", 20),
        ("nginx", 20),
        ("gateway", 20),
    ]
    for row in rows:
        assert set(REQUIRED) <= set(row), row
        assert row["errors"] == {}, row
        assert row["live_at_window_end_min"] == 20, row
        assert 0 < row["open_p50_ms"] <= row["open_p99_ms"] < 2000, row
        # End of speech to first audio: the 200 ms of VAD silence, then the reply starts.
        assert 150 < row["ttfa_p50_ms"] < 2000, row
        assert row["messages_per_s"] > 100, row  # ~20 messages a second per session


@pytest.mark.timeout(150)
def test_quick_bench_values_are_sane(quick_bench: tuple[list[dict[str, Any]], str]) -> None:
    rows, _ = quick_bench
    by_target = {r["target"]: r for r in rows}
    direct = by_target["direct"]
    assert direct["added_rtt_p50_ms"] == direct["added_rtt_p99_ms"] == 0.0
    assert direct["cpu_us_per_msg"] is None
    assert direct["rss_kib_per_session"] is None
    for name in ("nginx", "gateway"):
        row = by_target[name]
        assert -50 < row["added_rtt_p50_ms"] < 500, row
        assert -50 < row["added_rtt_p99_ms"] < 1000, row
        assert 0 <= row["cpu_us_per_msg"] < 10_000, row
        assert -1024 < row["rss_kib_per_session"] < 10 * 1024, row
    # The gateway is Python doing real work per frame: it cannot be free.
    assert by_target["gateway"]["cpu_us_per_msg"] > 0


@pytest.mark.timeout(150)
def test_quick_bench_markdown_states_machine_method_and_targets(
    quick_bench: tuple[list[dict[str, Any]], str],
) -> None:
    _, md = quick_bench
    for heading in ("## Machine and versions", "## Method", "## Targets (issue 8)", "## Results"):
        assert heading in md
    assert "nginx version" in md
    assert "Token minting" in md
    assert "closed loop" in md
