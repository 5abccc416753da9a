"""A real Redis Cluster on loopback: three masters, no replicas, every slot covered.

Each node is a ``redis-server --cluster-enabled yes`` process with its own data directory, port
and cluster-bus port (the default bus port, port + 10000, may be taken); ``redis-cli --cluster
create`` assigns the slots, and the cluster is ready when every node says ``cluster_state:ok``.
Nodes are stopped by pid. A missing ``redis-server`` or ``redis-cli`` fails loudly.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port, require_binary, stop_process, wait_for_port


class ClusterNode:
    def __init__(self, binary: str, root: Path, index: int) -> None:
        self.binary = binary
        self.port = free_port()
        self.bus_port = free_port()
        self.dir = root / f"node-{index}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", "2000",
            "--appendonly", "no",
            "--save", "",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class RedisClusterServer:
    """``with RedisClusterServer().running() as cluster:`` then ``cluster.url`` (every node,
    comma-separated, the form ``GATEWAY_REDIS_URL`` takes with ``GATEWAY_REDIS_CLUSTER=true``).
    """

    def __init__(self, masters: int = 3) -> None:
        self.server = require_binary("redis-server", "redis-server")
        self.cli = require_binary("redis-cli", "redis-tools")
        self.root = Path(tempfile.mkdtemp(prefix="rgw-cluster-"))
        self.nodes = [ClusterNode(self.server, self.root, i) for i in range(masters)]

    @property
    def url(self) -> str:
        return ",".join(f"redis://{node.address}" for node in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 20.0) -> RedisClusterServer:
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                wait_for_port(node.port)
            self._create(timeout)
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[RedisClusterServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of one node as a dict."""
        out = self._cli("-p", str(port), "cluster", "info", timeout=5)
        pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def _create(self, timeout: float) -> None:
        self._cli(
            "--cluster", "create", *(node.address for node in self.nodes),
            "--cluster-replicas", "0", "--cluster-yes",
            timeout=timeout,
        )  # fmt: skip

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        expected = str(len(self.nodes))
        while True:
            infos = [self.info(node.port) for node in self.nodes]
            if all(
                i.get("cluster_state") == "ok"
                and i.get("cluster_slots_ok") == "16384"
                and i.get("cluster_known_nodes") == expected
                for i in infos
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster did not become ok: {infos}")
            time.sleep(0.05)

    def _cli(self, *args: str, timeout: float) -> str:
        result = subprocess.run(
            [self.cli, "-h", "127.0.0.1", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout
