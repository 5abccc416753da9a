"""The processes of a benchmark run: upstreams, nginx, redis-server and the gateway.

Each is started with ``taskset -c CPU`` on a free loopback port, its output in a log file in
the run's directory, and stopped by its own pid (SIGTERM, then SIGKILL). A missing binary is
an error with the package to install, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
LOADTEST = REPO / "loadtest"
ADMIN_KEY = "adm-bench-0123456789abcdef"
HASH_SECRET = "bench-pepper-0123456789abcdef"
UPSTREAM_KEY = "sk-bench-upstream"
# Far above what a run spends: the quota checks run (full accounting) but never refuse.
GENEROUS_QUOTAS = {
    "GATEWAY_DEFAULT_TOKENS_PER_MINUTE": str(10**12),
    "GATEWAY_DEFAULT_TOKENS_PER_DAY": str(10**14),
    "GATEWAY_DEFAULT_AUDIO_SECONDS_PER_DAY": str(10**9),
    "GATEWAY_DEFAULT_MAX_CONCURRENT_SESSIONS": "5000",
}


def find_binary(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; the benchmark needs the real one "
            f"(Debian package '{package}': apt-get install -y {package})."
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """``taskset -c cpu argv`` (taskset execs: the child's pid is the program's own)."""
    if cpu is None:
        return list(argv)
    return [find_binary("taskset", "util-linux"), "-c", str(cpu), *argv]


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def launch(
    name: str,
    argv: Sequence[str],
    port: int,
    workdir: Path,
    cpu: int | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            pinned(cpu, argv),
            stdout=out,
            stderr=out,
            env=dict(env or os.environ),
            cwd=cwd or REPO,
        )
    handle = Proc(name, proc, port, log)
    try:
        wait_for_port(port, proc)
    except (RuntimeError, TimeoutError) as exc:
        handle.stop()
        raise RuntimeError(f"{name} did not start: {exc}\n{handle.log_tail()}") from None
    return handle


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in reversed(procs):
            proc.stop()


def _clean_env() -> dict[str, str]:
    # The operator's own GATEWAY_* settings must not leak into the measured configuration.
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


# ---- the processes ------------------------------------------------------------------------


def start_replay(workdir: Path, script: Path, cpu: int | None) -> Proc:
    port = free_port()
    argv = [sys.executable, str(LOADTEST / "replay.py"), "--port", str(port)]
    return launch("replay", [*argv, "--script", str(script)], port, workdir, cpu)


def start_sim(workdir: Path, cpu: int | None, speed: float = 1.0) -> Proc:
    port = free_port()
    argv = [sys.executable, "-m", "gateway.cli", "sim", "--port", str(port)]
    argv += ["--api-key", UPSTREAM_KEY, "--speed", str(speed)]
    return launch("sim", argv, port, workdir, cpu)


def start_redis(workdir: Path, cpu: int | None) -> Proc:
    port = free_port()
    argv = [find_binary("redis-server", "redis-server"), "--port", str(port)]
    argv += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    return launch("redis", argv, port, workdir, cpu)


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, upstream_port: int, cpu: int | None) -> Proc:
    binary = find_binary("nginx", "nginx")
    port = free_port()
    conf_dir = workdir / "nginx"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=port, upstream_port=upstream_port))
    # -g cannot repeat a directive the file sets; "daemon off" lives in the file.
    # -e: the error log from the first line on (not the distribution's /var/log/nginx).
    argv = [binary, "-e", str(conf_dir / "nginx-error.log"), "-c", str(conf), "-p", str(conf_dir)]
    return launch("nginx", argv, port, workdir, cpu)


def gateway_env(
    upstream_port: int, upstream_key: str, redis_port: int, port: int
) -> dict[str, str]:
    return {
        **_clean_env(),
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_HASH_SECRET": HASH_SECRET,
        "GATEWAY_UPSTREAM_KIND": "sim",
        "GATEWAY_UPSTREAM_URL": f"ws://127.0.0.1:{upstream_port}/v1",
        "GATEWAY_UPSTREAM_API_KEY": upstream_key,
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_REPLICA_ID": "bench",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        **GENEROUS_QUOTAS,
    }


def export_ref(ref: str, into: Path) -> Path:
    """The ``gateway`` package as it is at git ``ref``, exported (read-only for the repo) to
    ``into``; run from there, ``python -m gateway.cli`` imports that code, not the working
    tree's (the editable install's finder comes after sys.path)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "gateway"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def start_gateway(
    workdir: Path,
    upstream_port: int,
    upstream_key: str,
    redis_port: int,
    cpu: int | None,
    code: Path | None = None,
) -> Proc:
    """``realtime-gateway serve``; from an exported tree ``code`` instead of the working tree
    when given (see ``export_ref``)."""
    port = free_port()
    env = gateway_env(upstream_port, upstream_key, redis_port, port)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    proc = launch("gateway", argv, port, workdir, cpu, env, cwd=code)
    _wait_healthy(proc)
    return proc


def _wait_healthy(proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{proc.port}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the gateway was not healthy within {timeout}s\n{proc.log_tail()}")


def create_tenant(gateway_port: int, name: str = "bench") -> str:
    """A tenant on the gateway through the admin API; returns its API key."""
    response = httpx.post(
        f"http://127.0.0.1:{gateway_port}/admin/tenants",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"name": name},
        timeout=10,
    )
    if response.status_code != 201:
        raise RuntimeError(f"creating a tenant answered {response.status_code}: {response.text}")
    return str(response.json()["api_key"])


# Counters kept from the gateway's /metrics, and the label that splits each (None: summed).
SCRAPED: dict[str, str | None] = {
    "realtime_gateway_relayed_events_total": "direction",
    "realtime_gateway_refused_upgrades_total": "reason",
    "realtime_gateway_upstream_errors_total": "kind",
    "realtime_gateway_sessions_started_total": None,
    "realtime_gateway_responses_total": None,
    "realtime_gateway_redis_errors_total": None,
}


def scrape_metrics(gateway_port: int) -> dict[str, float]:
    """Sums of the gateway's counters that tell whether frames were relayed, dropped or
    refused (and why), keyed ``name`` or ``name:label``."""
    text = httpx.get(f"http://127.0.0.1:{gateway_port}/metrics", timeout=10).text
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        if name in SCRAPED:
            label = SCRAPED[name]
            key = f"{name}:{_label(series, label)}" if label else name
        elif name.endswith("_total") and "dropped" in name:
            key = name
        else:
            continue
        sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def _label(series: str, label: str) -> str:
    marker = f'{label}="'
    at = series.find(marker)
    if at < 0:
        return ""
    return series[at + len(marker) : series.index('"', at + len(marker))]
