"""Running the Locust user headless against a gateway, and reading its CSV statistics."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtest import targets

LOCUSTFILE = targets.LOADTEST / "locustfile.py"
# The entries the Locust user records (type, name).
ENTRIES = (
    ("REST", "mint client secret"),
    ("WS", "session open"),
    ("WS", "time to first audio delta"),
    ("WS", "turn"),
)


def locust_command(host: str, users: int, seconds: int, csv_prefix: Path) -> list[str]:
    rate = max(1, min(users, 10))
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(rate),
        "-t",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def run_locust(
    host: str, tenant_key: str, users: int, seconds: int, workdir: Path, cpu: int | None = None
) -> dict[str, Any]:
    prefix = workdir / "locust"
    argv = locust_command(host, users, seconds, prefix)
    env = {**os.environ, "LOADTEST_TENANT_KEY": tenant_key}
    done = subprocess.run(
        targets.pinned(cpu, argv),
        capture_output=True,
        timeout=seconds + 90,
        env=env,
        cwd=targets.REPO,
        check=False,
    )
    (workdir / "locust.out").write_bytes(done.stdout + done.stderr)
    shown = ["locust", *argv[argv.index("-f") + 1 :]]
    return {
        "command": " ".join(shown).replace(str(targets.REPO) + "/", ""),
        "returncode": done.returncode,
        "stats": read_csv(Path(f"{prefix}_stats.csv")),
        "failures": read_csv(Path(f"{prefix}_failures.csv")),
        "output_tail": (done.stdout + done.stderr).decode(errors="replace")[-2000:],
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run(
    workdir: Path,
    users: int,
    seconds: int,
    load_cpu: int,
    proxy_cpu: int,
    gateway_code: Path | None = None,
) -> dict[str, Any]:
    """Locust against a fresh gateway (simulator upstream at real time, real redis-server)."""
    rundir = workdir / "locust"
    rundir.mkdir()
    sim = targets.start_sim(rundir, load_cpu)
    redis = targets.start_redis(rundir, load_cpu)
    with targets.running(sim, redis):
        gateway = targets.start_gateway(
            rundir, sim.port, targets.UPSTREAM_KEY, redis.port, proxy_cpu, gateway_code
        )
        with targets.running(gateway):
            key = targets.create_tenant(gateway.port, "locust")
            print(f"locust: {users} users for {seconds}s...", flush=True)
            return run_locust(
                f"http://127.0.0.1:{gateway.port}", key, users, seconds, rundir, load_cpu
            )
