"""The metric surface the issue asks for, and labels that stay bounded whatever clients do."""

from __future__ import annotations

from gateway.metrics import (
    OTHER_TENANT,
    Metrics,
    close_code_label,
    response_status_label,
)

P = "realtime_gateway_"

# name (as exposed, counters with _total) -> (type, label names). The issue's list, in order.
EXPECTED = {
    "live_sessions": ("gauge", {"tenant"}),
    "sessions_started_total": ("counter", {"tenant"}),
    "sessions_ended_total": ("counter", {"tenant", "reason", "close_code"}),
    "refused_upgrades_total": ("counter", {"reason"}),
    "session_duration_seconds": ("histogram", set()),
    "upstream_connect_seconds": ("histogram", {"upstream"}),
    "first_delta_seconds": ("histogram", set()),
    "relayed_events_total": ("counter", {"direction", "type"}),
    "relayed_bytes_total": ("counter", {"direction", "type"}),
    "tokens_total": ("counter", {"tenant", "class"}),
    "audio_seconds_total": ("counter", {"tenant", "direction"}),
    "cost_usd_total": ("counter", {"tenant"}),
    "upstream_ratelimit_remaining": ("gauge", {"upstream", "credential", "name"}),
    "quota_refusals_total": ("counter", {"tenant", "limit"}),
    "redis_errors_total": ("counter", {"operation"}),
    "buffered_charges": ("gauge", set()),
    "relay_queue_frames": ("gauge", set()),
    "dropped_frames_total": ("counter", {"direction"}),
    "client_secrets_minted_total": ("counter", {"tenant"}),
    "client_secrets_redeemed_total": ("counter", {"tenant"}),
    # Beyond the list: what alerts and panels use, and the health of the accounting.
    "upstream_ratelimit_limit": ("gauge", {"upstream", "credential", "name"}),
    "upstream_sessions_total": ("counter", {"upstream", "credential"}),
    "upstream_errors_total": ("counter", {"upstream", "kind"}),
    "tenant_tokens_remaining": ("gauge", {"tenant", "window"}),
    "responses_total": ("counter", {"status"}),
    "refused_client_events_total": ("counter", set()),
    "charges_dropped_total": ("counter", set()),
    "draining": ("gauge", set()),
}


def _families(metrics: Metrics) -> dict[str, tuple[str, set[str], str]]:
    """Exposed name -> (type, label names, help), label names from the declared metrics."""
    out: dict[str, tuple[str, set[str], str]] = {}
    for collector in metrics.registry._collector_to_names:  # every registered metric object
        describe = getattr(collector, "describe", None)
        if describe is None:
            continue
        for family in describe():
            name = f"{family.name}_total" if family.type == "counter" else family.name
            labels = set(getattr(collector, "_labelnames", ()))
            out[name.removeprefix(P)] = (family.type, labels, family.documentation)
    return out


def test_every_metric_of_the_issue_with_its_labels() -> None:
    families = _families(Metrics())
    assert set(families) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        got_kind, got_labels, documentation = families[name]
        assert (got_kind, got_labels) == (kind, labels), name
        assert documentation.strip(), f"{name} has no help"
        assert "session_id" not in got_labels
        assert "token" not in got_labels


def test_tenant_is_a_label_only_under_the_cap() -> None:
    metrics = Metrics(tenant_label_cap=2)
    assert [metrics.tenant(t) for t in ("a", "b", "c", "a", "d")] == [
        "a",
        "b",
        OTHER_TENANT,
        "a",
        OTHER_TENANT,
    ]
    assert Metrics(tenant_label_cap=0).tenant("a") == OTHER_TENANT


def test_event_types_from_clients_cannot_grow_the_series() -> None:
    metrics = Metrics()
    for i in range(5000):
        slot = metrics.relay.slot("client_to_upstream", f"made.up.{i}")
        slot[0] += 1
        slot[1] += 10
    metrics.relay.slot("upstream_to_client", b"response.done")[0] += 1
    series = {
        sample.labels["type"]
        for family in metrics.registry.collect()
        if family.name == P + "relayed_events"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert series == {"other", "response.done"}
    assert len(metrics.relay._cache) <= 4096 + 1


def test_close_codes_and_statuses_are_bounded() -> None:
    assert close_code_label(1000) == "1000"
    assert close_code_label(1012) == "1012"
    assert close_code_label(4000) == "4000"
    assert close_code_label(4321) == "other"
    assert close_code_label(3999) == "other"
    assert close_code_label(None) == "none"
    assert response_status_label("completed") == "completed"
    assert response_status_label("cancelled") == "cancelled"
    assert response_status_label("x" * 100) == "other"
    assert response_status_label(None) == "other"
