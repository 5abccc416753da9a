"""Turning benchmark runs into BENCHMARKS.json rows and BENCHMARKS.md."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest import targets

if TYPE_CHECKING:
    from loadtest.bench import Options

# The fields every BENCHMARKS.json row has (issue 8), then the extras that explain them.
ROW_FIELDS = (
    "added_rtt_p50_ms",
    "added_rtt_p99_ms",
    "cpu_us_per_msg",
    "rss_kib_per_session",
    "open_p50_ms",
    "open_p99_ms",
    "ttfa_p50_ms",
)
EXTRA_FIELDS = (
    "rtt_p50_ms",
    "rtt_p99_ms",
    "ttfa_p99_ms",
    "turn_p50_ms",
    "messages_per_s",
    "proxy_cpu_pct",
    "generator_cpu_pct",
    "upstream_cpu_pct",
    "cpu0_busy_pct",
    "cpu1_busy_pct",
    "cpu0_other_pct",
    "cpu1_other_pct",
    "aux_cpu_pct",
    "late_ticks",
    "max_tick_lag_ms",
    "rss_marginal_kib_per_session",
    "proxy_sys_share_pct",
)
# Issue 8 targets.
CPU_RATIO_MAX = 1.5
RTT_P50_OVER_NGINX_MAX = 0.2
RTT_P99_OVER_NGINX_MAX = 1.0
RSS_KIB_MAX = 32.0
OPEN_P50_OVER_DIRECT_MAX = 2.0
OPEN_P99_OVER_DIRECT_MAX = 10.0
MINT_RATE_MIN = 3000.0
MINT_P99_MAX = 10.0
HELD_SESSIONS = 1000
SATURATED_PCT = 95.0


def one_line(r: dict[str, Any]) -> str:
    return (
        f"rtt p50/p99 {r['rtt_p50_ms']}/{r['rtt_p99_ms']} ms, open p50 {r['open_p50_ms']} ms, "
        f"cpu {r['cpu_us_per_msg']} us/msg, rss {r['rss_kib_per_session']} KiB/session, "
        f"{r['messages_per_s']} msg/s, gen {r['generator_cpu_pct']}%, errors {r['errors']}"
    )


# ---- rows -------------------------------------------------------------------------------


def _with_added(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run with added_rtt over the direct run of the same session count and repeat."""
    direct = {(r["sessions"], r["repeat"]): r for r in runs if r["target"] == "direct"}
    out = []
    for run in runs:
        base = direct.get((run["sessions"], run["repeat"]))
        row = dict(run)
        busy = run.get("core_busy_pct") or {}
        row["cpu0_busy_pct"], row["cpu1_busy_pct"] = busy.get("cpu0"), busy.get("cpu1")
        row["cpu0_other_pct"], row["cpu1_other_pct"] = _other_load(run, busy)
        for q in ("p50", "p99"):
            mine, theirs = run.get(f"rtt_{q}_ms"), base.get(f"rtt_{q}_ms") if base else None
            if run["target"] == "direct":
                row[f"added_rtt_{q}_ms"] = 0.0
            elif mine is not None and theirs is not None:
                row[f"added_rtt_{q}_ms"] = round(mine - theirs, 3)
            else:
                row[f"added_rtt_{q}_ms"] = None
        out.append(row)
    return out


def _other_load(run: dict[str, Any], busy: dict[str, float]) -> tuple[float | None, ...]:
    """Busy time of each core not spent by the benchmark's own processes (teammates' test
    suites, the kernel's softirq work for other processes...): the run's noise floor."""
    ours0 = sum(run.get(k) or 0.0 for k in ("generator_cpu_pct", "upstream_cpu_pct", "aux_cpu_pct"))
    ours1 = run.get("proxy_cpu_pct") or 0.0
    cpu0, cpu1 = busy.get("cpu0"), busy.get("cpu1")
    return (
        None if cpu0 is None else round(max(0.0, cpu0 - ours0), 1),
        None if cpu1 is None else round(max(0.0, cpu1 - ours1), 1),
    )


def _spread(values: list[Any]) -> list[float] | None:
    numbers = [v for v in values if v is not None]
    if not numbers:
        return None
    return [round(min(numbers), 3), round(statistics.median(numbers), 3), round(max(numbers), 3)]


def rows(runs: list[dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]]:
    enriched = _with_added(runs)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in enriched:
        groups.setdefault((run["target"], run["sessions"]), []).append(run)
    out = []
    for (target, sessions), group in sorted(
        groups.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))
    ):
        row: dict[str, Any] = {"target": target, "sessions": sessions}
        spread: dict[str, list[float] | None] = {}
        for name in (*ROW_FIELDS, *EXTRA_FIELDS):
            values = _spread([run.get(name) for run in group])
            spread[name] = values
            row[name] = values[1] if values else None
        errors: Counter[str] = Counter()
        for run in group:
            errors.update(run.get("errors") or {})
        row["repeats"] = len(group)
        row["live_at_window_end_min"] = min(run["live_at_window_end"] for run in group)
        row["errors"] = dict(errors)
        row["spread"] = spread  # [min, median, max] over the repeats
        out.append(row)
    return out


# ---- targets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    measured: str
    limit: str
    met: bool | None  # None: not measured in this run

    @property
    def mark(self) -> str:
        return {True: "met", False: "**MISSED**", None: "not measured"}[self.met]


def _row(table: list[dict[str, Any]], target: str, sessions: int) -> dict[str, Any] | None:
    return next((r for r in table if r["target"] == target and r["sessions"] == sessions), None)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdicts(
    table: list[dict[str, Any]], mint: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> list[Verdict]:
    counts = sorted({r["sessions"] for r in table})
    out: list[Verdict] = []
    for n in counts:
        out += _relay_verdicts(table, n)
    out += _mint_verdicts(mint)
    out.append(_held_verdict(runs, counts))
    return out


def _relay_verdicts(table: list[dict[str, Any]], n: int) -> list[Verdict]:
    gw, ngx, direct = _row(table, "gateway", n), _row(table, "nginx", n), _row(table, "direct", n)
    out: list[Verdict] = []
    if gw is None:
        return out
    if ngx is not None and gw["cpu_us_per_msg"] and ngx["cpu_us_per_msg"]:
        ratio = gw["cpu_us_per_msg"] / ngx["cpu_us_per_msg"]
        out.append(
            Verdict(
                f"CPU per relayed message, {n} sessions",
                f"{gw['cpu_us_per_msg']:.1f} us vs nginx {ngx['cpu_us_per_msg']:.1f} us "
                f"= {ratio:.2f}x",
                f"<= {CPU_RATIO_MAX}x nginx",
                ratio <= CPU_RATIO_MAX,
            )
        )
    if ngx is not None:
        for q, limit in (("p50", RTT_P50_OVER_NGINX_MAX), ("p99", RTT_P99_OVER_NGINX_MAX)):
            g, x = gw.get(f"added_rtt_{q}_ms"), ngx.get(f"added_rtt_{q}_ms")
            over = None if g is None or x is None else g - x
            out.append(
                Verdict(
                    f"Added round trip {q} over nginx's, {n} sessions"
                    + (" (the target's count)" if n == 200 else ""),
                    f"gateway +{_fmt(g, 3)} ms, nginx +{_fmt(x, 3)} ms: {_fmt(over, 3)} ms more",
                    f"<= {limit} ms",
                    None if over is None else over <= limit,
                )
            )
    rss = gw.get("rss_kib_per_session")
    nginx_rss = ngx.get("rss_kib_per_session") if ngx else None
    out.append(
        Verdict(
            f"Memory per live session, {n} sessions",
            f"{_fmt(rss, 1)} KiB (nginx {_fmt(nginx_rss, 1)})",
            f"<= {RSS_KIB_MAX:g} KiB",
            None if rss is None else rss <= RSS_KIB_MAX,
        )
    )
    if direct is not None:
        for q, limit in (("p50", OPEN_P50_OVER_DIRECT_MAX), ("p99", OPEN_P99_OVER_DIRECT_MAX)):
            g, d = gw.get(f"open_{q}_ms"), direct.get(f"open_{q}_ms")
            over = None if g is None or d is None else g - d
            out.append(
                Verdict(
                    f"Session open {q} over direct, {n} sessions",
                    f"{_fmt(g)} ms vs {_fmt(d)} ms: +{_fmt(over)} ms",
                    f"<= {limit:g} ms",
                    None if over is None else over <= limit,
                )
            )
    return out


def _mint_verdicts(mint: list[dict[str, Any]]) -> list[Verdict]:
    closed = next((m for m in mint if m["mode"] == "closed"), None)
    at_target = next(
        (m for m in mint if m["mode"] == "open" and m["offered_per_second"] == MINT_RATE_MIN),
        None,
    )
    rate = closed["per_second"] if closed else None
    closed_p99 = closed["p99_ms"] if closed else None
    p99 = at_target["p99_ms"] if at_target else None
    return [
        Verdict(
            "Token minting throughput (one gateway core, real Redis)",
            f"{_fmt(rate, 0)} mints/s (closed loop, p99 {_fmt(closed_p99)} ms)",
            f">= {MINT_RATE_MIN:g}/s",
            None if rate is None else rate >= MINT_RATE_MIN,
        ),
        Verdict(
            f"Token minting p99 at {MINT_RATE_MIN:g}/s offered",
            f"{_fmt(p99)} ms",
            f"< {MINT_P99_MAX:g} ms",
            None if p99 is None else p99 < MINT_P99_MAX and (at_target or {}).get("failed") == 0,
        ),
    ]


def _held_verdict(runs: list[dict[str, Any]], counts: list[int]) -> Verdict:
    name = f"{HELD_SESSIONS} talking sessions on one gateway core, no dropped frame"
    mine = [r for r in runs if r["target"] == "gateway" and r["sessions"] >= HELD_SESSIONS]
    if not mine:
        return Verdict(name, "not run at this session count", "all held", None)
    worst_cpu = max(r.get("proxy_cpu_pct") or 0 for r in mine)
    worst_p99 = max(r.get("rtt_p99_ms") or 0 for r in mine)
    problems = _held_problems(mine)
    measured = f"gateway CPU up to {worst_cpu:.0f}% of its core, RTT p99 up to {worst_p99:.0f} ms"
    if problems:
        measured += "; " + "; ".join(problems)
    return Verdict(name, measured, "all live, no errors or drops, core not saturated", not problems)


def _held_problems(runs: list[dict[str, Any]]) -> list[str]:
    """What kept the runs of the largest count from holding, summed over the repeats."""
    problems = []
    live = [r["live_at_window_end"] for r in runs]
    if min(live) < runs[0]["sessions"]:
        problems.append(f"only {min(live)}-{max(live)} of {runs[0]['sessions']} live")
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.get("errors") or {})
    if errors:
        problems.append("errors " + ", ".join(f"{k} x{v}" for k, v in errors.most_common()))
    saturated = sum(1 for r in runs if (r.get("proxy_cpu_pct") or 0) >= SATURATED_PCT)
    if saturated:
        problems.append(f"gateway core saturated in {saturated} of {len(runs)} runs")
    dropped = sum(_dropped(r) for r in runs)
    if dropped:
        problems.append(f"{dropped:.0f} frames dropped (gateway metric)")
    return problems


def _dropped(run: dict[str, Any]) -> float:
    metrics = run.get("gateway_metrics") or {}
    # Counters only: a counter's _created series is a timestamp.
    return float(sum(v for k, v in metrics.items() if "dropped" in k and k.endswith("_total")))


# ---- machine ----------------------------------------------------------------------------


def _command(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    repo = str(targets.REPO)
    commit = _command(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"])
    status = subprocess.run(
        ["git", "-C", repo, "status", "--porcelain"], capture_output=True, text=True, check=False
    ).stdout
    dirty = len([line for line in status.splitlines() if line.strip()])
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": _cpu_model(),
        "Memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "nginx": _command([targets.find_binary("nginx", "nginx"), "-v"]),
        "redis-server": _command([targets.find_binary("redis-server", "redis-server"), "-v"]),
        "Repository HEAD (at the end)": f"{commit}"
        + (f" (+{dirty} uncommitted files)" if dirty else ""),
        "Libraries": ", ".join(
            f"{p} {_version(p)}"
            for p in ("uvicorn", "websockets", "picows", "uvloop", "orjson", "redis", "locust")
        ),
    }


# ---- markdown ---------------------------------------------------------------------------


def meta(options: Options, started: float) -> dict[str, Any]:
    """What the report says about the run itself, taken when it ends."""
    info = machine()
    if options.gateway_ref:
        repo = str(targets.REPO)
        commit = _command(["git", "-C", repo, "rev-parse", "--short=12", options.gateway_ref])
        info["Gateway benchmarked"] = (
            f"`{options.gateway_ref}` ({commit}), exported with git archive; not the working tree"
        )
    return {
        "command": options.command,
        "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "quick": options.quick,
        "machine": info,
    }


def markdown(
    options: Options,
    table: list[dict[str, Any]],
    results: dict[str, Any],
    other: dict[str, Any] | None = None,
    notes: str | None = None,
) -> str:
    about = results["meta"]
    runs, mint = results["runs"], results["mint"]
    parts = [
        "# Benchmarks\n",
        f"Generated by `{about['command']}`, finished {about['finished']} "
        f"({about['minutes']} minutes).\n"
        + (
            "\n**Quick mode: a smoke test of the harness; these numbers mean nothing.**\n"
            if about["quick"]
            else ""
        ),
        "## Machine and versions\n\n"
        + _table(["", ""], [[k, v] for k, v in about["machine"].items()]),
        _method_section(options),
        _targets_section(verdicts(table, mint, runs)),
        notes.strip() + "\n" if notes else "",
        _results_section(table, options),
        _cost_section(table),
        _compare_section(table, results, other),
        _health_section(table),
        _mint_section(mint),
        _locust_section(results.get("locust")),
        _runs_section(runs),
        _failed_section(results.get("failed") or []),
    ]
    return "\n".join(parts)


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _method_section(o: Options) -> str:
    upstream = (
        "the **replaying upstream** (`loadtest/replay.py`): one turn recorded from "
        "`gateway.sim` at real-time speed at the start of the run, played back by a picows "
        "server with the same bytes, order and pacing for every turn (the simulator itself "
        "spends ~110 us of CPU per message on pure-Python VAD and JSON, too much to serve 1,000 "
        "talking sessions from the shared core)"
        if o.upstream == "replay"
        else "the simulator (`realtime-gateway sim --speed 1`)"
    )
    return f"""## Method

* Targets, one after the other with fresh processes for every run: **direct** (the load
  generator talks to the upstream), **nginx** (`worker_processes 1`, plain WebSocket reverse
  proxy, HTTP/1.1 with Upgrade/Connection headers, one-hour timeouts), **gateway**
  (`realtime-gateway serve`, real `redis-server`, generous tenant quotas so that every quota
  check runs and none refuses, usage ledger and metrics on, log level warning).
* Upstream: {upstream}.
* CPU pinning: the proxy under test on CPU 1; the load generator, the upstream and
  redis-server on CPU 0 (`taskset`).
* Workload per session (`loadtest/workload.py`): a browser-style front end, microphone always
  on: one 100 ms PCM16 24 kHz append (6.4 KB of JSON) every 100 ms; each turn is 1.6 s of
  speech-like audio then silence, server VAD ends the turn, the reply (~3.4 s of audio in
  200 ms deltas with transcript deltas) streams back, the next turn starts 0.5 s after
  `response.done`. About 11 messages a second up and 9 down per session.
* Sessions are opened at {o.ramp_rate:g} a second with tokens minted beforehand (minting is
  not in the open time); the gateway's tokens come from its own `POST
  /v1/realtime/client_secrets`. After a {o.settle:g} s settle, a {o.window:g} s window is
  measured. {o.repeat} repeat(s) per session count; tables show the median and [min-max].
* Round trip: once a second per session, `conversation.item.retrieve` of an unknown item,
  answered by an `error` event that echoes our event_id; timed at the generator, sent right
  after an append on the same socket. Added round trip = the target's percentile minus the
  direct run's (same session count and repeat).
* CPU per message: utime+stime of the proxy's process tree (`/proc/<pid>/stat`) over the
  window, divided by the messages the generator sent and received in it (every message
  crosses the proxy once). Clock-tick resolution: 10 ms.
* Memory per session: VmRSS of the proxy's process tree at the end of the window (all
  sessions live) minus before the first session, divided by the session count.
* Session open: from starting the TCP connection to receiving `session.created` (upgrade,
  token redeem, admission, upstream connect). Time to first audio: from sending the last
  speech append to the first `response.output_audio.delta` (includes the 200 ms VAD silence).
* The generator (`loadtest/loadgen.py`): picows client on uvloop, one task per session,
  frames encoded once; its own CPU, the upstream's, and each core's busy time are reported
  below to show whether the load side kept up.
* Shared machine: before each run the benchmark waits (up to {o.quiet_timeout:g} s) until no
  CPU is more than {o.quiet_pct:g}% busy; "other load" in the tables is what other programs
  took from each core during the measured window.
"""


def _targets_section(items: list[Verdict]) -> str:
    body = [[v.name, v.measured, v.limit, v.mark] for v in items]
    return "## Targets (issue 8)\n\n" + _table(["Target", "Measured", "Limit", "Result"], body)


def _cell(row: dict[str, Any], name: str, digits: int = 2) -> str:
    value = row.get(name)
    if value is None:
        return "-"
    spread = (row.get("spread") or {}).get(name)
    text = f"{value:.{digits}f}"
    if spread and row.get("repeats", 1) > 1 and spread[0] != spread[2]:
        text += f" [{spread[0]:.{digits}f}-{spread[2]:.{digits}f}]"
    return text


def _results_section(table: list[dict[str, Any]], o: Options) -> str:
    header = [
        "Sessions",
        "Target",
        "Added RTT p50 ms",
        "Added RTT p99 ms",
        "RTT p50 / p99 ms",
        "CPU us/msg",
        "Proxy CPU %",
        "RSS KiB/session",
        "Open p50 ms",
        "Open p99 ms",
        "TTFA p50 ms",
        "msg/s",
    ]
    body = [
        [
            str(r["sessions"]),
            r["target"],
            _cell(r, "added_rtt_p50_ms", 3),
            _cell(r, "added_rtt_p99_ms", 3),
            f"{_fmt(r['rtt_p50_ms'], 3)} / {_fmt(r['rtt_p99_ms'], 3)}",
            _cell(r, "cpu_us_per_msg", 1),
            _cell(r, "proxy_cpu_pct", 1),
            _cell(r, "rss_kib_per_session", 1),
            _cell(r, "open_p50_ms"),
            _cell(r, "open_p99_ms"),
            _cell(r, "ttfa_p50_ms", 1),
            _fmt(r["messages_per_s"], 0),
        ]
        for r in table
    ]
    return (
        f"## Results (median of {o.repeat}; [min-max] over repeats)\n\n"
        + _table(header, body)
        + "\nSame figures in BENCHMARKS.json (one row per target and session count, with "
        "`spread` = [min, median, max]).\n"
    )


def _cost_section(table: list[dict[str, Any]]) -> str:
    header = ["Sessions", "Proxy", "CPU us/msg", "Kernel share of CPU %", "RSS KiB/session"]
    header += ["Marginal RSS KiB/session", "Proxy CPU %"]
    body = [
        [
            str(r["sessions"]),
            r["target"],
            _cell(r, "cpu_us_per_msg", 1),
            _cell(r, "proxy_sys_share_pct", 0),
            _cell(r, "rss_kib_per_session", 1),
            _cell(r, "rss_marginal_kib_per_session", 1),
            _cell(r, "proxy_cpu_pct", 1),
        ]
        for r in table
        if r["target"] != "direct"
    ]
    return (
        "## Where the proxies' costs go\n\n"
        "Kernel share: stime / (utime + stime) of the proxy over the window (the socket work "
        "of relaying, as opposed to the proxy's own code). RSS per session is the issue's "
        "definition, (RSS with all sessions live - RSS before the first) / sessions, which "
        "includes one-time warm-up of a fresh process; marginal RSS is the growth from half "
        "to all the sessions, divided by the sessions added: the memory one more live "
        "session costs.\n\n" + _table(header, body)
    )


COMPARED = (
    ("cpu_us_per_msg", "CPU us/msg", 1),
    ("added_rtt_p50_ms", "Added RTT p50 ms", 3),
    ("added_rtt_p99_ms", "Added RTT p99 ms", 3),
    ("rss_kib_per_session", "RSS KiB/session", 1),
    ("open_p50_ms", "Open p50 ms", 2),
    ("open_p99_ms", "Open p99 ms", 2),
    ("ttfa_p50_ms", "TTFA p50 ms", 1),
)


def _label(results: dict[str, Any]) -> str:
    machine = (results.get("meta") or {}).get("machine") or {}
    return str(
        machine.get("Gateway benchmarked")
        or machine.get("Repository HEAD (at the end)")
        or machine.get("Gateway commit")
        or "?"
    )


def _compare_section(
    table: list[dict[str, Any]], results: dict[str, Any], other: dict[str, Any] | None
) -> str:
    """The gateway of this run beside the gateway of an earlier one (--compare)."""
    if other is None:
        return ""
    before = rows(other["runs"], tuple(dict.fromkeys(r["target"] for r in other["runs"])))
    header = ["Sessions", "Figure", "Before", "Now", "nginx now"]
    body = []
    for now in (r for r in table if r["target"] == "gateway"):
        n = now["sessions"]
        then, ngx = _row(before, "gateway", n), _row(table, "nginx", n)
        for key, title, digits in COMPARED:
            body.append(
                [
                    str(n),
                    title,
                    _fmt(then.get(key) if then else None, digits),
                    _fmt(now.get(key), digits),
                    _fmt(ngx.get(key) if ngx else None, digits),
                ]
            )
    mint_then = next((m for m in other.get("mint") or [] if m["mode"] == "closed"), None)
    mint_now = next((m for m in results.get("mint") or [] if m["mode"] == "closed"), None)
    body.append(
        [
            "-",
            "Mints/s (closed loop)",
            _fmt(mint_then["per_second"] if mint_then else None, 0),
            _fmt(mint_now["per_second"] if mint_now else None, 0),
            "-",
        ]
    )
    return (
        "## Before and after\n\n"
        f"Before: {_label(other)}, run {other.get('meta', {}).get('finished', '?')} with the "
        f"same method. Now: {_label(results)}. Medians.\n\n" + _table(header, body)
    )


def _health_section(table: list[dict[str, Any]]) -> str:
    header = [
        "Sessions",
        "Target",
        "Generator CPU %",
        "Upstream CPU %",
        "Redis CPU %",
        "CPU0 busy % (other)",
        "CPU1 busy % (other)",
        "Late ticks",
        "Max tick lag ms",
        "Live at end (min)",
        "Errors",
    ]
    body = [
        [
            str(r["sessions"]),
            r["target"],
            _cell(r, "generator_cpu_pct", 1),
            _cell(r, "upstream_cpu_pct", 1),
            _cell(r, "aux_cpu_pct", 1),
            f"{_fmt(r['cpu0_busy_pct'], 1)} ({_fmt(r['cpu0_other_pct'], 1)})",
            f"{_fmt(r['cpu1_busy_pct'], 1)} ({_fmt(r['cpu1_other_pct'], 1)})",
            _fmt(r["late_ticks"], 0),
            _fmt(r["max_tick_lag_ms"], 1),
            str(r["live_at_window_end_min"]),
            ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none",
        ]
        for r in table
    ]
    return (
        "## Did the load side keep up?\n\n"
        "CPU 0 carries the generator and the upstream (and redis-server for the gateway); CPU "
        "1 the proxy. Busy % is the whole core; (other) is the part not spent by the "
        "benchmark's own processes: other programs on the machine, plus the kernel's softirq "
        "work for the loopback traffic where it is not charged to a process. A late tick is an "
        "append sent more than 20 ms after its slot: the generator's own lag.\n\n"
        + _table(header, body)
    )


def _mint_section(mint: list[dict[str, Any]]) -> str:
    if not mint:
        return "## Token minting\n\nNot run.\n"
    header = ["Mode", "Offered /s", "Achieved /s", "OK", "Failed", "p50 ms", "p99 ms", "max ms"]
    body = [
        [
            "closed loop" if m["mode"] == "closed" else "open loop",
            _fmt(m["offered_per_second"], 0),
            _fmt(m["per_second"], 0),
            str(m["ok"]),
            str(m["failed"]),
            _fmt(m["p50_ms"]),
            _fmt(m["p99_ms"]),
            _fmt(m["max_ms"]),
        ]
        for m in mint
    ]
    cpu = mint[0].get("gateway_cpu_us_per_mint_avg")
    return (
        "## Token minting\n\n`POST /v1/realtime/client_secrets` on the gateway (CPU 1) with "
        "redis-server and the client (keep-alive connections, pre-built requests) on CPU 0. "
        f"Closed loop: {mint[0]['connections']} connections back to back (the most it can "
        "do). Open loop: requests due at a fixed rate over a pool of connections, latency "
        "counted from when each was due.\n\n"
        + _table(header, body)
        + f"\nGateway CPU per mint, averaged over all three: {_fmt(cpu, 0)} us.\n"
    )


def _locust_section(locust: dict[str, Any] | None) -> str:
    if not locust:
        return "## Locust\n\nNot run (`--locust-users 0` or quick mode).\n"
    header = ["Type", "Name", "Requests", "Failures", "Median ms", "p95 ms", "p99 ms", "Max ms"]
    body = [
        [
            s["Type"],
            s["Name"],
            s["Request Count"],
            s["Failure Count"],
            *(_ms(s.get(k)) for k in ("Median Response Time", "95%", "99%", "Max Response Time")),
        ]
        for s in locust["stats"]
    ]
    failures = locust.get("failures") or []
    fail_text = (
        "\n".join(
            f"* {f['Method']} {f['Name']}: {f['Error']} x{f['Occurrences']}" for f in failures
        )
        or "none"
    )
    return (
        f"## Locust\n\n`{locust['command']}` against the gateway (simulator upstream at real "
        f"time, redis-server), exit code {locust['returncode']}.\n\n"
        + _table(header, body)
        + f"\nFailures: {fail_text}\n"
    )


def _failed_section(failed: list[dict[str, Any]]) -> str:
    if not failed:
        return ""
    items = "\n".join(
        f"* {f['target']} {f['sessions']} #{f['repeat']}:\n\n```\n{f['error'].strip()}\n```"
        for f in failed
    )
    return f"## Failed runs\n\n{items}\n"


def _ms(value: str | None) -> str:
    try:
        return f"{float(value or ''):.0f}"
    except ValueError:
        return value or ""


def _runs_section(runs: list[dict[str, Any]]) -> str:
    header = ["Target", "Sessions", "#", "RTT p50/p99", "Open p50/p99", "CPU us/msg", "RSS KiB/s"]
    header += ["msg/s", "Gen CPU %", "Other load CPU0/CPU1 %", "Extra"]
    body = []
    for r in runs:
        extra = []
        if r.get("aux_cpu_pct"):
            extra.append(f"redis {r['aux_cpu_pct']}%")
        metrics = r.get("gateway_metrics") or {}
        if metrics:
            up = metrics.get("realtime_gateway_relayed_events_total:client_to_upstream", 0)
            down = metrics.get("realtime_gateway_relayed_events_total:upstream_to_client", 0)
            extra.append(
                f"gateway counted {up:.0f} up / {down:.0f} down, generator "
                f"{r.get('messages_sent_total')} / {r.get('messages_received_total')}"
            )
        refused = {
            k.split(":", 1)[1]: v for k, v in metrics.items() if "refused_upgrades" in k and v
        }
        if refused:
            extra.append("refused " + ", ".join(f"{k} x{v:.0f}" for k, v in refused.items()))
        if r.get("gateway_log_errors"):
            extra.append(f"{r['gateway_log_errors']} error log lines")
        body.append(
            [
                r["target"],
                str(r["sessions"]),
                str(r["repeat"]),
                f"{r['rtt_p50_ms']}/{r['rtt_p99_ms']}",
                f"{r['open_p50_ms']}/{r['open_p99_ms']}",
                str(r["cpu_us_per_msg"]),
                str(r["rss_kib_per_session"]),
                str(r["messages_per_s"]),
                str(r["generator_cpu_pct"]),
                "/".join(_fmt(v, 0) for v in _other_load(r, r.get("core_busy_pct") or {})),
                "; ".join(extra),
            ]
        )
    return "## Every run\n\n" + _table(header, body)
