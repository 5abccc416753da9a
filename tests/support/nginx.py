"""nginx (the Debian package) as a WebSocket-capable round-robin load balancer for tests.

The configuration is generated in a temporary directory: one ``upstream`` block listing the
gateway replicas, HTTP/1.1 to the upstreams with the ``Upgrade``/``Connection`` headers passed
on (the usual WebSocket proxy recipe), long read/send timeouts, and ``proxy_next_upstream
error timeout`` with ``max_fails=1`` so that a new connection that finds a replica dead is
retried on the next one and the dead one is then skipped. One worker process, so that round
robin is exact. Started in the foreground, stopped by pid. A missing nginx fails loudly.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.servers import free_port, require_binary, stop_process, wait_for_port

_CONF = """\
worker_processes 1;
events {{
    worker_connections 4096;
}}
http {{
    log_format upstream '$remote_addr "$request" $status $upstream_addr $upstream_status '
                        '$request_time';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream gateway {{
{servers}
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 0;
        }}
    }}
}}
"""


class NginxBalancer:
    """``with NginxBalancer([port1, port2, port3]).running() as lb:`` then ``lb.http_url`` and
    ``lb.ws_url`` reach the replicas in turn."""

    def __init__(self, upstream_ports: Sequence[int], error_log: Path | None = None) -> None:
        self.binary = require_binary("nginx", "nginx")
        self.port = free_port()
        self.upstream_ports = list(upstream_ports)
        self.dir = Path(tempfile.mkdtemp(prefix="rgw-nginx-"))
        # nginx run as root hands its temp directories to an unprivileged worker user, which
        # must be able to reach them.
        self.dir.chmod(0o755)
        self.conf = self.dir / "nginx.conf"
        self.pid_file = self.dir / "nginx.pid"
        self.error_log = error_log or self.dir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1"

    def render(self) -> str:
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;"
            for p in self.upstream_ports
        )
        return _CONF.format(dir=self.dir, servers=servers, port=self.port)

    def start(self) -> NginxBalancer:
        self.conf.write_text(self.render(), encoding="utf-8")
        globals_ = f"daemon off; pid {self.pid_file}; error_log {self.error_log} info;"
        check = subprocess.run(
            [self.binary, "-t", "-q", "-c", str(self.conf), "-p", str(self.dir), "-g", globals_],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused the generated configuration:\n{check.stderr}")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf), "-p", str(self.dir), "-g", globals_],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc)  # SIGTERM: fast shutdown of master and workers
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[NginxBalancer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text("utf-8", "replace")
        except OSError:
            return ""
