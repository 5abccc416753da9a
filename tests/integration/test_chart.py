"""The Helm chart, rendered and linted by the real Helm engine, its output validated.

Helm comes from PyPI's ``helm-python-sdk`` (Helm's Go library behind a C ABI, no ``helm``
binary); the rendered objects are validated against the Kubernetes JSON schemas of
``K8S_VERSION`` shipped by ``kubernetes-validate``; PromQL (alerts and dashboard) is checked by
the real ``promtool``. The Prometheus Operator kinds are not in the Kubernetes schemas and are
checked structurally here (``CRD_KINDS``). A missing tool fails the run; nothing is skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support.servers import require_binary

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "realtime-gateway"
CI_DIR = CHART_DIR / "ci"
DASHBOARD = CHART_DIR / "dashboards" / "realtime-gateway.json"

# The Kubernetes version the rendered objects are validated against (strict schemas: unknown
# fields are errors) and the chart is linted for. Chart.yaml's kubeVersion floor is 1.27.
K8S_VERSION = "1.31.0"
RELEASE = "rg"
NAMESPACE = "gateway"

# Scenario values files that must exist under ci/ (file name minus "-values.yaml").
REQUIRED_SCENARIOS = {"default", "existing-secret", "builtin-redis", "redis-cluster", "full"}

# Kinds that are not in the Kubernetes schemas (Prometheus Operator CRDs), validated by the
# structural checks below. Any other kind without a schema fails the test.
CRD_KINDS = {"monitoring.coreos.com/v1": {"ServiceMonitor", "PrometheusRule"}}

# The metric names of the gateway (the only names alerts and panels may use).
COUNTERS = {
    "realtime_gateway_quota_refusals_total",
    "realtime_gateway_upstream_errors_total",
    "realtime_gateway_upstream_sessions_total",
    "realtime_gateway_redis_errors_total",
    "realtime_gateway_sessions_started_total",
    "realtime_gateway_sessions_ended_total",
    "realtime_gateway_relayed_events_total",
    "realtime_gateway_relayed_bytes_total",
    "realtime_gateway_tokens_total",
    "realtime_gateway_cost_usd_total",
    "realtime_gateway_refused_upgrades_total",
}
GAUGES = {
    "realtime_gateway_upstream_ratelimit_remaining",
    "realtime_gateway_upstream_ratelimit_limit",
    "realtime_gateway_buffered_charges",
    "realtime_gateway_live_sessions",
    "realtime_gateway_tenant_tokens_remaining",
}
HISTOGRAMS = {
    "realtime_gateway_session_duration_seconds",
    "realtime_gateway_first_delta_seconds",
}
KNOWN_METRICS = COUNTERS | GAUGES | HISTOGRAMS
METRIC_RE = re.compile(r"\brealtime_gateway_[a-z0-9_]+")

DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
DNS1123_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MARKER = "MARKER-d1f0c4a7-never-render-me"


# --- tools -------------------------------------------------------------------------------------


def _require_module(name: str, package: str) -> ModuleType:
    try:
        return __import__(name)
    except (ImportError, OSError) as exc:
        pytest.fail(
            f"{package} is not usable ({exc!r}); the chart tests need it: pip install {package}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    return _require_module("helm_python", "helm-python-sdk")


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    module = _require_module("kubernetes_validate", "kubernetes-validate")
    latest = module.utils.latest_version()
    if tuple(map(int, latest.split(".")[:2])) < (1, 31):
        pytest.fail(f"kubernetes-validate {latest} has no schemas for {K8S_VERSION}")
    return module


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return require_binary("promtool", "prometheus")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def chart(helm: ModuleType) -> Iterator[Any]:
    loaded = helm.Chart.load(CHART_DIR)
    try:
        yield loaded
    finally:
        loaded.close()


# --- helpers -----------------------------------------------------------------------------------


def _scenarios() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


def _scenario_values(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CI_DIR / f"{name}-values.yaml").read_text(encoding="utf-8"))
    return data or {}


def _render_raw(chart: Any, values: dict[str, Any] | None = None, **opts: Any) -> dict[str, str]:
    opts.setdefault("name", RELEASE)
    opts.setdefault("namespace", NAMESPACE)
    manifests: dict[str, str] = chart.render(values or {}, **opts)
    return {path: text for path, text in manifests.items() if not path.endswith("NOTES.txt")}


def _render(chart: Any, values: dict[str, Any] | None = None, **opts: Any) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in _render_raw(chart, values, **opts).items():
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path} rendered a non-object document"
                doc.setdefault("__source__", path)
                docs.append(doc)
    return docs


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__source__"}


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _gateway(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment", f"{RELEASE}-realtime-gateway")


def _container(deployment: dict[str, Any], name: str = "gateway") -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def _config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = _one(docs, "ConfigMap", f"{RELEASE}-realtime-gateway")["data"]
    return data


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_strings(item)


def _b64_decoded(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None


def _metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC_RE.findall(expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def _promtool_check_rules(promtool: str, groups: list[dict[str, Any]], tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


# --- scenarios, lint and schemas ---------------------------------------------------------------


def test_required_scenarios_exist() -> None:
    missing = REQUIRED_SCENARIOS - set(_scenarios())
    assert not missing, f"ci/ lacks the scenario values files: {sorted(missing)}"


@pytest.mark.parametrize("scenario", _scenarios())
def test_lint_strict(helm: ModuleType, scenario: str) -> None:
    report = helm.lint(
        CHART_DIR,
        _scenario_values(scenario),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{K8S_VERSION}",
    )
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, f"helm lint --strict: {problems}"
    assert not report["errors"], f"helm lint --strict: {report}"


@pytest.mark.parametrize("scenario", _scenarios())
def test_rendered_objects_match_kubernetes_schemas(
    chart: Any, kubernetes_validate: ModuleType, scenario: str
) -> None:
    docs = _render(chart, _scenario_values(scenario))
    assert docs, "the chart rendered nothing"
    seen = set()
    for doc in docs:
        where = f"{doc['__source__']} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        meta = doc["metadata"]
        assert DNS1123_RE.match(meta["name"]), where
        assert len(meta["name"]) <= 63, where
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, where
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", where
        key = (doc["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"{where} rendered twice"
        seen.add(key)
        if doc["kind"] in CRD_KINDS.get(doc["apiVersion"], set()):
            _check_crd(doc)
            continue
        problem = None
        try:
            kubernetes_validate.validate(_strip(doc), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problem = f"{where} is invalid for Kubernetes {K8S_VERSION}: {path}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError as exc:
            problem = f"{where}: {exc.message}; add the kind to CRD_KINDS with a structural check"
        if problem:
            pytest.fail(problem, pytrace=False)


def _check_crd(doc: dict[str, Any]) -> None:
    """Structural checks of the Prometheus Operator objects (their CRDs are not at hand)."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec", "__source__"}, where
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, where
        assert spec["selector"]["matchLabels"], where
        assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE], where
        allowed = {"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings"}
        allowed |= {"metricRelabelings"}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= allowed, f"{where}: unknown endpoint fields {endpoint}"
            assert endpoint["port"] == "http", where
            assert endpoint["path"] == "/metrics", where
            assert endpoint["scheme"] in {"http", "https"}, where
            assert DURATION_RE.match(endpoint["interval"]), where
            assert DURATION_RE.match(endpoint["scrapeTimeout"]), where
    elif doc["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}, where
        for group in spec["groups"]:
            assert set(group) <= {"name", "rules", "interval"}, where
            assert group["name"], where
            assert group["rules"], f"{where}: empty group"
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert ("alert" in rule) != ("record" in rule), f"{where}: {rule}"
                assert isinstance(rule["expr"], str), where
                assert rule["expr"].strip(), where
                assert DURATION_RE.match(rule.get("for", "0s")), where
                for field in ("labels", "annotations"):
                    assert all(isinstance(v, str) for v in rule.get(field, {}).values()), where
    else:  # pragma: no cover - CRD_KINDS and this function go together
        pytest.fail(f"no structural check for {where}")


# --- what matters ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", _scenarios())
def test_grace_period_covers_prestop_and_drain(chart: Any, scenario: str) -> None:
    docs = _render(chart, _scenario_values(scenario))
    pod = _gateway(docs)["spec"]["template"]["spec"]
    container = _container(_gateway(docs))
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop = float(command[1])
    drain = float(_config_data(docs)["GATEWAY_DRAIN_SECONDS"])
    assert pre_stop > 0, "preStop must give endpoints time to drop the pod"
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain, (
        f"grace {pod['terminationGracePeriodSeconds']} <= preStop {pre_stop} + drain {drain}"
    )


def test_grace_period_set_too_short_is_refused(chart: Any, helm: ModuleType) -> None:
    values = {"gateway": {"drainSeconds": 30}, "preStopSleepSeconds": 5}
    with pytest.raises(helm.HelmRenderError, match=r"terminationGracePeriodSeconds \(35\)"):
        _render(chart, {**values, "terminationGracePeriodSeconds": 35})
    docs = _render(chart, {**values, "terminationGracePeriodSeconds": 36})
    assert _gateway(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 36


def test_fractional_drain_is_rounded_up(chart: Any) -> None:
    docs = _render(chart, {"gateway": {"drainSeconds": 12.5}, "preStopSleepSeconds": 3})
    grace = _gateway(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 3 + math.ceil(12.5) + 10
    assert _config_data(docs)["GATEWAY_DRAIN_SECONDS"] == "12.5"


@pytest.mark.parametrize("scenario", _scenarios())
def test_probes_use_health_and_readiness_paths(chart: Any, scenario: str) -> None:
    docs = _render(chart, _scenario_values(scenario))
    container = _container(_gateway(docs))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(_config_data(docs)["GATEWAY_PORT"])
    assert ports == {"http": port}
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", str(port)]
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    service = _one(docs, "Service", f"{RELEASE}-realtime-gateway")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("scenario", _scenarios())
def test_every_container_is_hardened(chart: Any, scenario: str) -> None:
    docs = _render(chart, _scenario_values(scenario))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["runAsUser"] > 0, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in ctx["capabilities"], name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be an emptyDir"
            assert container["resources"]["requests"], name


def test_existing_secret_renders_no_secret_value(chart: Any) -> None:
    secret_values = {
        "adminKey": MARKER,
        "hashSecret": MARKER,
        "upstreamApiKey": MARKER,
        "upstreams": [{"name": "u", "credentials": [{"name": "c", "api_key": MARKER}]}],
        "tenants": [{"id": "t1", "api_key": MARKER}],
    }
    values = {
        "replicaCount": 2,
        "secrets": {"existingSecret": "my-gateway-secrets", **secret_values},
        "redis": {"mode": "external", "external": {"url": f"redis://:{MARKER}@redis:6379/0"}},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "grafanaDashboard": {"enabled": True},
        "ingress": {"enabled": True},
    }
    raw = "\n".join(chart.render(values, name=RELEASE, namespace=NAMESPACE).values())
    assert MARKER not in raw
    docs = _render(chart, values)
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret with existingSecret"
    for doc in docs:
        for text in _walk_strings(_strip(doc)):
            decoded = _b64_decoded(text)
            assert decoded is None or MARKER not in decoded, f"{doc['kind']} holds it encoded"
    # Every secret setting comes from the existing Secret.
    env = {e["name"]: e for e in _container(_gateway(docs))["env"]}
    for var in ("GATEWAY_ADMIN_KEY", "GATEWAY_HASH_SECRET", "GATEWAY_REDIS_URL"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "my-gateway-secrets", var
    for var in ("GATEWAY_UPSTREAM_API_KEY", "GATEWAY_UPSTREAMS", "GATEWAY_TENANTS"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "my-gateway-secrets", var
    # The pod template carries no checksum of a Secret the chart does not own.
    annotations = _gateway(docs)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def test_chart_secret_holds_the_values_and_nothing_else_does(chart: Any) -> None:
    """The same grep finds the marker when the chart owns the Secret: the test above can see."""
    values = {
        "secrets": {"adminKey": MARKER, "upstreamApiKey": MARKER},
        "upstream": {"kind": "openai"},
        "redis": {"mode": "external", "external": {"url": f"redis://:{MARKER}@redis:6379/0"}},
        "replicaCount": 2,
    }
    docs = _render(chart, values)
    secret = _one(docs, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["admin-key"] == MARKER
    assert decoded["upstream-api-key"] == MARKER
    assert MARKER in decoded["redis-url"]
    for doc in docs:
        if doc["kind"] != "Secret":
            assert not any(MARKER in s for s in _walk_strings(_strip(doc))), doc["kind"]
    annotations = _gateway(docs)["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


def _selectors(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        key = f"{kind}/{name}"
        if kind == "Deployment":
            found[key] = spec["selector"]
            labels = spec["template"]["metadata"]["labels"]
            for label, value in spec["selector"]["matchLabels"].items():
                assert labels[label] == value, f"{key}: pod labels miss the selector"
        elif kind == "Service" or kind in {"PodDisruptionBudget", "ServiceMonitor"}:
            found[key] = spec["selector"]
        elif kind == "NetworkPolicy":
            found[key] = spec["podSelector"]
        elif kind == "HorizontalPodAutoscaler":
            found[key] = spec["scaleTargetRef"]
    return found


@pytest.mark.parametrize("scenario", ["full", "builtin-redis"])
def test_selectors_stable_across_upgrades(
    chart: Any, helm: ModuleType, tmp_path: Path, scenario: str
) -> None:
    newer_dir = tmp_path / "realtime-gateway"
    shutil.copytree(CHART_DIR, newer_dir)
    meta_path = newer_dir / "Chart.yaml"
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    meta["version"], meta["appVersion"] = "9.8.7", "9.8.7"
    meta_path.write_text(yaml.safe_dump(meta), encoding="utf-8")
    values = _scenario_values(scenario)
    before = _render(chart, {**values, "image": {"tag": "0.1.0"}})
    with helm.Chart.load(newer_dir) as newer:
        after = _render(newer, {**values, "image": {"tag": "2.0.0-rc.1"}}, revision=2)
    assert _gateway(before)["metadata"]["labels"] != _gateway(after)["metadata"]["labels"]
    old, new = _selectors(before), _selectors(after)
    assert old == new
    assert f"Deployment/{RELEASE}-realtime-gateway" in old
    for key, selector in old.items():
        if key.startswith("HorizontalPodAutoscaler/"):
            continue
        labels = selector.get("matchLabels", selector)
        assert set(labels) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}, key


def test_builtin_redis_is_not_selected_by_the_gateway(chart: Any) -> None:
    docs = _render(chart, _scenario_values("builtin-redis"))
    redis_pod_labels = _one(docs, "Deployment", f"{RELEASE}-realtime-gateway-redis")["spec"][
        "template"
    ]["metadata"]["labels"]
    gateway_selector = _one(docs, "Service", f"{RELEASE}-realtime-gateway")["spec"]["selector"]
    assert not all(redis_pod_labels.get(k) == v for k, v in gateway_selector.items())
    env = {e["name"]: e for e in _container(_gateway(docs))["env"]}
    assert env["GATEWAY_REDIS_URL"]["value"] == f"redis://{RELEASE}-realtime-gateway-redis:6379/0"
    redis_service = _one(docs, "Service", f"{RELEASE}-realtime-gateway-redis")
    assert redis_service["spec"]["ports"][0]["port"] == 6379


def test_redis_modes(chart: Any) -> None:
    default = _render(chart, _scenario_values("default"))
    assert "GATEWAY_REDIS_URL" not in {e["name"] for e in _container(_gateway(default))["env"]}
    assert not [d for d in default if "redis" in d["metadata"]["name"]]
    cluster = _render(chart, _scenario_values("redis-cluster"))
    assert _config_data(cluster)["GATEWAY_REDIS_CLUSTER"] == "true"
    sentinel = _render(chart, _scenario_values("redis-sentinel"))
    assert _config_data(sentinel)["GATEWAY_REDIS_CLUSTER"] == "false"
    assert _config_data(sentinel)["GATEWAY_REDIS_SENTINEL_MASTER"] == "mymaster"


def test_config_change_rolls_the_pods(chart: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = _gateway(_render(chart, values))["spec"]["template"]["metadata"][
            "annotations"
        ]
        value: str = annotations["checksum/config"]
        return value

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({}) == base, "the checksum must be deterministic"
    assert checksum({"gateway": {"logLevel": "debug"}}) != base
    assert checksum({"gateway": {"config": {"default_models": ["gpt-realtime"]}}}) != base


@pytest.mark.parametrize("scenario", _scenarios())
def test_settings_accept_the_rendered_configuration(
    chart: Any, scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the chart hands the container is what gateway/config.py reads, and it loads."""
    from gateway.config import Settings

    docs = _render(chart, _scenario_values(scenario))
    data = _config_data(docs)
    config_file = tmp_path / "config.json"
    config_file.write_text(data["config.json"], encoding="utf-8")
    json.loads(data["config.json"])
    env = {k: v for k, v in data.items() if k.startswith("GATEWAY_")}
    env["GATEWAY_CONFIG_FILE"] = str(config_file)
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for var in _container(_gateway(docs))["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            secret = secrets.get(ref["name"])
            if secret is not None and ref["key"] in secret["data"]:
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            else:
                assert ref.get("optional") or scenario in {"existing-secret", "full"}, var
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    unknown = set(env) - fields - {"GATEWAY_REPLICA_ID"}
    assert not unknown, f"the chart sets variables gateway/config.py does not know: {unknown}"
    unknown_file_fields = set(json.loads(data["config.json"])) - set(Settings.model_fields)
    assert not unknown_file_fields, unknown_file_fields
    for name in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.drain_seconds == float(data["GATEWAY_DRAIN_SECONDS"])
    assert (settings.redis_url is not None) == ("GATEWAY_REDIS_URL" in env)


# --- the values schema and the template's own checks -------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": "three"}, r"/replicaCount.*want integer"),
        ({"replicas": 3}, r"additional properties 'replicas' not allowed"),
        ({"image": {"tga": "1.0"}}, r"/image.*additional properties 'tga' not allowed"),
        ({"redis": {"mode": "memcached"}}, r"/redis/mode"),
        ({"gateway": {"drainSeconds": -1}}, r"/gateway/drainSeconds"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, r"/securityContext"),
        ({"gateway": {"env": {"GATEWAY_ADMIN_KEY": "x"}}}, r"propertyName 'GATEWAY_ADMIN_KEY'"),
        ({"gateway": {"config": {"admin_key": "x"}}}, r"propertyName 'admin_key'"),
        ({"metrics": {"prometheusRule": {"redisErrors": {"for": "soon"}}}}, r"/for"),
    ],
    ids=[
        "replicaCount-not-integer",
        "unknown-top-level-key",
        "unknown-nested-key",
        "redis-mode-not-in-enum",
        "negative-drain",
        "writable-root-filesystem",
        "secret-variable-in-configmap-env",
        "secret-field-in-config-file",
        "bad-alert-duration",
    ],
)
def test_schema_refuses_wrong_values(
    chart: Any, helm: ModuleType, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert re.search(expected, str(caught.value), re.S), str(caught.value)
    report = helm.lint(CHART_DIR, values, strict=True)
    assert report["errors"], "helm lint must report the schema violation too"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 3}, "supports one replica only"),
        ({"autoscaling": {"enabled": True}}, "supports one replica only"),
        ({"redis": {"mode": "external"}}, "needs redis.external.url"),
        (
            {
                "redis": {
                    "mode": "external",
                    "external": {"url": "redis://r:26379", "topology": "sentinel"},
                }
            },
            "needs redis.external.sentinelMasterName",
        ),
        (
            {"upstream": {"url": "wss://x.openai.azure.com/openai/v1"}},
            "needs secrets.upstreamApiKey",
        ),
        (
            {
                "secrets": {
                    "upstreamApiKey": "k",
                    "upstreams": [{"name": "a", "credentials": [{"name": "c", "api_key": "k"}]}],
                }
            },
            "not both",
        ),
    ],
    ids=[
        "embedded-store-with-replicas",
        "embedded-store-with-hpa",
        "external-redis-without-url",
        "sentinel-without-master",
        "upstream-url-without-key",
        "shorthand-and-list-upstreams",
    ],
)
def test_template_refuses_inconsistent_values(
    chart: Any, helm: ModuleType, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(expected)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_values_are_all_documented_and_in_the_readme() -> None:
    """Every value has a `# --` comment on itself or on an enclosing key, and a README row."""
    lines = (CHART_DIR / "values.yaml").read_text(encoding="utf-8").splitlines()
    key_re = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")
    stack: list[tuple[int, str, bool]] = []
    documented: list[str] = []
    undocumented: list[str] = []
    previous = ""
    for line in lines:
        match = key_re.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([s[1] for s in stack] + [match["key"]])
            own_doc = previous.strip().startswith("# --") or "# --" in match["rest"]
            covered = own_doc or any(s[2] for s in stack)
            if own_doc:
                documented.append(path)
            value = match["rest"].split(" #")[0].strip()
            is_leaf = value != ""
            if is_leaf and not covered:
                undocumented.append(path)
            stack.append((indent, match["key"], covered))
        if line.strip():
            previous = line
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
    readme = (CHART_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p for p in documented if f"| `{p}` |" not in readme]
    assert not missing, f"README.md values table lacks: {missing}"


# --- monitoring --------------------------------------------------------------------------------


def test_ingress_is_websocket_friendly(chart: Any) -> None:
    docs = _render(chart, _scenario_values("full"))
    annotations = _one(docs, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    overridden = _render(
        chart,
        {
            "ingress": {
                "enabled": True,
                "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200"},
            }
        },
    )
    assert (
        _one(overridden, "Ingress")["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/proxy-read-timeout"
        ]
        == "7200"
    )


def test_hpa_scales_on_cpu_and_live_sessions(chart: Any) -> None:
    docs = _render(chart, _scenario_values("full"))
    hpa = _one(docs, "HorizontalPodAutoscaler")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "realtime_gateway_live_sessions"
    assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "150"}
    assert hpa["spec"]["scaleTargetRef"]["name"] == _gateway(docs)["metadata"]["name"]
    assert "replicas" not in _gateway(docs)["spec"], "the HPA owns the replica count"


def test_prometheus_rule_alerts(chart: Any, promtool: str, tmp_path: Path) -> None:
    docs = _render(chart, _scenario_values("full"))
    rule = _one(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(alerts) >= {
        "RealtimeGatewayUpstreamHeadroomLow",
        "RealtimeGatewayTenantAtQuota",
        "RealtimeGatewayUpstreamErrorRate",
        "RealtimeGatewayRedisErrors",
        "RealtimeGatewayBufferedChargesGrowing",
    }
    for name, alert in alerts.items():
        used = _metric_names(alert["expr"])
        assert used, f"{name} uses no gateway metric"
        assert used <= KNOWN_METRICS, f"{name} uses unknown metrics {used - KNOWN_METRICS}"
        assert f'job="{RELEASE}-realtime-gateway"' in alert["expr"], name
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert alert["labels"]["team"] == "platform", name
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
    _promtool_check_rules(promtool, groups, tmp_path)
    monitor = _one(docs, "ServiceMonitor")
    service = _one(docs, "Service", f"{RELEASE}-realtime-gateway")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append((f"${variable['name']}", variable["definition"]))
    return exprs


def test_dashboard_model(chart: Any, promtool: str, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    used: set[str] = set()
    for where, expr in _dashboard_exprs(dashboard):
        names = _metric_names(expr)
        assert names, f"{where}: no gateway metric in {expr}"
        assert names <= KNOWN_METRICS, f"{where}: unknown metrics {names - KNOWN_METRICS}"
        used |= names
    wanted = KNOWN_METRICS - {"realtime_gateway_upstream_ratelimit_limit"}
    assert wanted <= used, f"no panel shows {sorted(wanted - used)}"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "live sessions",
        "session starts",
        "session ends by reason",
        "refused upgrades",
        "first delta latency",
        "relayed events",
        "relayed bytes",
        "tokens by tenant",
        "cost by tenant",
        "rate-limit remaining",
        "quota refusals",
        "redis errors",
        "buffered charges",
    ):
        assert topic in titles, f"no panel about {topic}"
    # Every expression is valid PromQL: promtool checks them as recording rules.
    rules = []
    for i, (_, expr) in enumerate(_dashboard_exprs(dashboard)):
        if expr.startswith("label_values("):
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    _promtool_check_rules(promtool, [{"name": "dashboard", "rules": rules}], tmp_path)
    # Shipped as a ConfigMap for the Grafana sidecar, unchanged.
    docs = _render(chart, _scenario_values("full"))
    config_map = _one(docs, "ConfigMap", f"{RELEASE}-realtime-gateway-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["realtime-gateway.json"]) == dashboard


def test_known_metrics_are_the_gateways() -> None:
    """The names alerts and panels use are the ones gateway/metrics.py registers."""
    from gateway.metrics import Metrics

    registered: dict[str, str] = {}
    for family in Metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        registered[name] = family.type
    missing = KNOWN_METRICS - set(registered)
    assert not missing, f"gateway/metrics.py does not register {sorted(missing)}"
    for name in KNOWN_METRICS:
        expected = "counter" if name in COUNTERS else "gauge" if name in GAUGES else "histogram"
        assert registered[name] == expected, f"{name} is a {registered[name]}"
