"""A short Locust run against a real gateway: simulator upstream at real time, real Redis.

Five front ends for 15 seconds: each mints a client secret, opens the realtime WebSocket with
it and talks a few turns. The run must produce every custom statistics entry, fail nothing
and exit 0.
"""

from __future__ import annotations

from pathlib import Path

from loadtest import locustrun, targets
from tests.support.servers import RedisServer

USERS = 5
SECONDS = 15


def test_locust_front_ends_talk_through_the_gateway(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    sim = targets.start_sim(tmp_path, cpu=None)
    with targets.running(sim):
        gateway = targets.start_gateway(
            tmp_path, sim.port, targets.UPSTREAM_KEY, redis_server.port, cpu=None
        )
        with targets.running(gateway):
            key = targets.create_tenant(gateway.port, "locust-test")
            result = locustrun.run_locust(
                f"http://127.0.0.1:{gateway.port}", key, USERS, SECONDS, tmp_path
            )

    assert result["returncode"] == 0, result["output_tail"]
    stats = {(row["Type"], row["Name"]): row for row in result["stats"]}
    for entry in locustrun.ENTRIES:
        assert entry in stats, f"no {entry} entry in {sorted(stats)}"
        assert int(stats[entry]["Request Count"]) > 0, stats[entry]
    assert all(int(row["Failure Count"]) == 0 for row in result["stats"]), result["stats"]
    assert result["failures"] == [], result["failures"]
    # Turns happened at real time: speech (1.6 s) plus a reply of seconds.
    assert float(stats[("WS", "turn")]["Median Response Time"]) > 2000
