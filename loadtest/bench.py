"""Side-by-side relay benchmark: the upstream directly, nginx in front of it, the gateway.

    python loadtest/bench.py --sessions 50,200,1000 --repeat 3     # full run (~15 minutes)
    python loadtest/bench.py --quick                               # 20 sessions, 5 s, smoke

For every session count and repeat, the same talking-session workload (loadgen.py) runs
against each target in turn, each with fresh processes. The proxy under test is pinned to
CPU 1; the load generator, the upstream and redis-server to CPU 0. Results go to
BENCHMARKS.md (tables, targets met or missed, machine, versions, method) and BENCHMARKS.json
(one row per target and session count: the median over repeats, with min/median/max).

The upstream is the replaying upstream (replay.py: the simulator's own recorded frames and
pacing, served by picows) unless ``--upstream sim``: the simulator itself costs about 110
microseconds a message and cannot serve 1,000 talking sessions from a shared core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `loadtest` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from loadtest import mintbench, procstats, replay, report, targets, workload

PROXY_CPU = 1
LOAD_CPU = 0
TARGETS = ("direct", "nginx", "gateway")


@dataclass(frozen=True)
class Options:
    sessions: tuple[int, ...]
    repeat: int
    window: float
    settle: float
    ramp_rate: float
    upstream: str
    targets: tuple[str, ...]
    mint_seconds: float
    mint_connections: int
    mint_target_rate: float
    only_mint: bool
    mint_profile: Path | None
    locust_users: int
    locust_seconds: int
    out_md: Path
    out_json: Path
    raw_json: Path | None
    render_only: Path | None
    compare: Path | None
    notes: Path | None
    gateway_ref: str | None
    quiet_pct: float
    quiet_timeout: float
    quick: bool
    keep_workdir: bool
    command: str


@dataclass
class Bench:
    options: Options
    workdir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    mint: list[dict[str, Any]] = field(default_factory=list)
    locust: dict[str, Any] | None = None
    script: Path | None = None
    gateway_code: Path | None = None  # an exported --gateway-ref, else the working tree


# ---- one run -------------------------------------------------------------------------------


@contextlib.contextmanager
def upstream_for(bench: Bench, rundir: Path) -> Iterator[tuple[targets.Proc, bool]]:
    """The upstream of one run, and whether it mints its own ek_ tokens (the simulator)."""
    if bench.options.upstream == "sim":
        proc = targets.start_sim(rundir, LOAD_CPU)
        mints = True
    else:
        assert bench.script is not None
        proc = targets.start_replay(rundir, bench.script, LOAD_CPU)
        mints = False
    with targets.running(proc):
        yield proc, mints


def run_once(bench: Bench, target: str, sessions: int, repeat: int) -> dict[str, Any]:
    rundir = bench.workdir / f"{target}-{sessions}-{repeat}"
    rundir.mkdir(parents=True)
    with upstream_for(bench, rundir) as (upstream, upstream_mints):
        args = ["--upstream-pid", str(upstream.pid)]
        if upstream_mints:
            args += ["--mint-url", f"127.0.0.1:{upstream.port}", "--key", targets.UPSTREAM_KEY]
        if target == "direct":
            return run_loadgen(bench, target, sessions, upstream.port, args, rundir)
        if target == "nginx":
            nginx = targets.start_nginx(rundir, upstream.port, PROXY_CPU)
            with targets.running(nginx):
                args += ["--proxy-pid", str(nginx.pid)]
                return run_loadgen(bench, target, sessions, nginx.port, args, rundir)
        return run_gateway(bench, sessions, upstream, args, rundir)


def run_gateway(
    bench: Bench, sessions: int, upstream: targets.Proc, args: list[str], rundir: Path
) -> dict[str, Any]:
    redis = targets.start_redis(rundir, LOAD_CPU)
    with targets.running(redis):
        gateway = targets.start_gateway(
            rundir, upstream.port, targets.UPSTREAM_KEY, redis.port, PROXY_CPU, bench.gateway_code
        )
        with targets.running(gateway):
            key = targets.create_tenant(gateway.port)
            gw_args = _drop_option_values(args, ("--mint-url", "--key"))
            gw_args += ["--proxy-pid", str(gateway.pid), "--aux-pid", str(redis.pid)]
            gw_args += ["--mint-url", f"127.0.0.1:{gateway.port}", "--key", key]
            result = run_loadgen(bench, "gateway", sessions, gateway.port, gw_args, rundir)
            result["gateway_metrics"] = targets.scrape_metrics(gateway.port)
            result["gateway_log_errors"] = _count_error_lines(gateway.log)
            return result


def _drop_option_values(args: list[str], options: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        else:
            out.append(arg)
    return out


def _count_error_lines(log: Path) -> int:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"level":"error"' in line or "ERROR" in line)


def run_loadgen(
    bench: Bench, target: str, sessions: int, port: int, extra: list[str], rundir: Path
) -> dict[str, Any]:
    o = bench.options
    argv = [sys.executable, str(targets.LOADTEST / "loadgen.py"), "--target", target]
    argv += ["--url", f"127.0.0.1:{port}", "--sessions", str(sessions)]
    argv += ["--window", str(o.window), "--settle", str(o.settle), "--ramp-rate", str(o.ramp_rate)]
    budget = sessions / o.ramp_rate + o.settle + o.window + 120
    done = subprocess.run(
        targets.pinned(LOAD_CPU, [*argv, *extra]),
        capture_output=True,
        timeout=budget,
        cwd=targets.REPO,
        check=False,
    )
    (rundir / "loadgen.err").write_bytes(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(
            f"loadgen failed for {target}/{sessions} ({done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---- the whole benchmark ---------------------------------------------------------------


def wait_for_quiet(o: Options) -> float:
    """On a shared machine, wait (up to ``quiet_timeout``) until every CPU is less busy than
    ``quiet_pct`` with nothing of ours running; returns the busiest CPU's last sample."""
    if o.quiet_pct <= 0:
        return 0.0
    deadline = time.monotonic() + o.quiet_timeout
    while True:
        busiest = max(procstats.sample_busy(2.0).values(), default=0.0)
        if busiest < o.quiet_pct or time.monotonic() > deadline:
            if busiest >= o.quiet_pct:
                print(f"  machine still {busiest:.0f}% busy: running anyway", flush=True)
            return busiest
        time.sleep(3.0)


def relay_runs(bench: Bench) -> None:
    o = bench.options
    for sessions in o.sessions:
        for repeat in range(o.repeat):
            for target in o.targets:
                busy_before = wait_for_quiet(o)
                started = time.monotonic()
                try:
                    result = run_once(bench, target, sessions, repeat)
                except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
                    # Keep going: the other targets' figures are still worth having; the
                    # report lists the failure, and the exit code says it happened.
                    print(f"{target:8} {sessions:5} #{repeat}: FAILED {exc}", flush=True)
                    bench.failed.append(
                        {
                            "target": target,
                            "sessions": sessions,
                            "repeat": repeat,
                            "error": str(exc)[-1500:],
                        }
                    )
                    continue
                result["busy_before_pct"] = busy_before
                result["repeat"] = repeat
                bench.runs.append(result)
                print(
                    f"{target:8} {sessions:5} #{repeat}: {report.one_line(result)}"
                    f" ({time.monotonic() - started:.0f}s)",
                    flush=True,
                )


def mint_runs(bench: Bench) -> None:
    """Minting on the gateway (CPU 1) with redis-server and the client on CPU 0."""
    o = bench.options
    rundir = bench.workdir / "mint"
    rundir.mkdir()
    redis = targets.start_redis(rundir, LOAD_CPU)
    with targets.running(redis):
        # The gateway needs an upstream setting, not a live upstream, to mint.
        gateway = targets.start_gateway(
            rundir,
            targets.free_port(),
            targets.UPSTREAM_KEY,
            redis.port,
            PROXY_CPU,
            bench.gateway_code,
        )
        with targets.running(gateway):
            key = targets.create_tenant(gateway.port)
            before = procstats.cpu_seconds([gateway.pid])
            results = uvloop.run(_mint_all(o, gateway.pid, gateway.port, key))
            total = procstats.cpu_seconds([gateway.pid]) - before
    minted = sum(r.ok for r, _ in results)
    for result, cpu_s in results:
        row = asdict(result)
        row["gateway_cpu_us_per_mint_avg"] = round(total / minted * 1e6, 1) if minted else None
        row["gateway_cpu_us_per_mint"] = round(cpu_s / result.ok * 1e6, 1) if result.ok else None
        bench.mint.append(row)
        print(
            f"mint {result.mode:6} {result.offered_per_second or '':>6}: {result.per_second}/s"
            f" p50 {result.p50_ms} p99 {result.p99_ms} ms"
            f" cpu {row['gateway_cpu_us_per_mint']} us/mint failed {result.failed}",
            flush=True,
        )


async def _mint_all(
    o: Options, pid: int, port: int, key: str
) -> list[tuple[mintbench.MintResult, float]]:
    """Closed loop, open loop at the target rate, open loop at half the closed-loop rate; each
    with the gateway CPU seconds it cost."""
    body = workload.mint_body()
    host = "127.0.0.1"
    before = procstats.cpu_seconds([pid])
    with _profiled(o.mint_profile, pid, o.mint_seconds):
        closed = await mintbench.closed_loop(
            host, port, key, body, o.mint_connections, o.mint_seconds
        )
    out = [(closed, procstats.cpu_seconds([pid]) - before)]
    half = max(50.0, round(closed.per_second / 2))
    for rate in (o.mint_target_rate, half):
        before = procstats.cpu_seconds([pid])
        result = await mintbench.open_loop(host, port, key, body, rate, o.mint_seconds)
        out.append((result, procstats.cpu_seconds([pid]) - before))
    return out


@contextlib.contextmanager
def _profiled(out: Path | None, pid: int, seconds: float) -> Iterator[None]:
    """py-spy on the gateway during the closed loop (``--mint-profile``): raw stacks, ready
    for a flame graph or a grep."""
    if out is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "-p", str(pid), "-f", "raw", "-o", str(out)]
    argv += ["-d", str(max(1, int(seconds))), "--nonblocking"]
    proc = subprocess.Popen(targets.pinned(LOAD_CPU, argv), stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.wait(timeout=seconds + 30)


def record_script(bench: Bench) -> None:
    bench.script = bench.workdir / "replay-turn.json"
    print("recording one turn from the simulator (real time, ~6 s)...", flush=True)
    script = asyncio.run(replay.record_from_embedded_sim())
    bench.script.write_bytes(script.to_json())


def check_tools() -> None:
    for name, package in (("nginx", "nginx"), ("redis-server", "redis-server")):
        targets.find_binary(name, package)
    targets.find_binary("taskset", "util-linux")
    if (os.cpu_count() or 1) < 2:
        raise RuntimeError("the benchmark pins the proxy and the load to two different CPUs")


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", default="50,200,1000", help="comma-separated session counts")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--window", type=float, default=15.0, help="measured seconds per run")
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--ramp-rate", type=float, default=100.0, help="sessions opened a second")
    p.add_argument("--upstream", choices=("replay", "sim"), default="replay")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--mint-seconds", type=float, default=5.0)
    p.add_argument("--mint-connections", type=int, default=64)
    p.add_argument("--mint-target-rate", type=float, default=3000.0)
    p.add_argument(
        "--only-mint",
        action="store_true",
        help="only the minting runs; print them as JSON (reports only with --raw-json)",
    )
    p.add_argument("--mint-profile", type=Path, help="py-spy raw stacks of the closed loop here")
    p.add_argument("--locust-users", type=int, default=50, help="0: no Locust run")
    p.add_argument("--locust-seconds", type=int, default=60)
    p.add_argument("--out-md", type=Path, default=targets.REPO / "BENCHMARKS.md")
    p.add_argument("--out-json", type=Path, default=targets.REPO / "BENCHMARKS.json")
    p.add_argument("--raw-json", type=Path, help="also write every run's full result here")
    p.add_argument("--render-only", type=Path, help="only write the reports from a --raw-json")
    p.add_argument(
        "--compare", type=Path, help="a --raw-json of an earlier run: add a before/after table"
    )
    p.add_argument("--notes", type=Path, help="markdown to include after the targets table")
    p.add_argument(
        "--gateway-ref",
        help="benchmark the gateway as it is at this git commit (default: the working tree)",
    )
    p.add_argument(
        "--quiet-pct",
        type=float,
        default=20.0,
        help="before each run, wait until no CPU is busier than this (0: do not wait)",
    )
    p.add_argument("--quiet-timeout", type=float, default=300.0, help="longest wait, seconds")
    p.add_argument("--quick", action="store_true", help="20 sessions, 5 s windows, no repeats")
    p.add_argument("--keep-workdir", action="store_true", help="keep the processes' logs")
    a = p.parse_args(argv)
    sessions = tuple(int(s) for s in a.sessions.split(","))
    chosen = tuple(t.strip() for t in a.targets.split(",") if t.strip())
    if unknown := set(chosen) - set(TARGETS):
        p.error(f"unknown targets: {sorted(unknown)}")
    if "direct" not in chosen:
        p.error("the direct target is the baseline of every added figure: keep it")
    quick = a.quick
    return Options(
        sessions=(20,) if quick else sessions,
        repeat=1 if quick else a.repeat,
        window=5.0 if quick else a.window,
        settle=1.5 if quick else a.settle,
        ramp_rate=a.ramp_rate,
        upstream=a.upstream,
        targets=chosen,
        mint_seconds=1.5 if quick else a.mint_seconds,
        mint_connections=a.mint_connections,
        mint_target_rate=a.mint_target_rate,
        only_mint=a.only_mint,
        mint_profile=a.mint_profile,
        locust_users=0 if quick else a.locust_users,
        locust_seconds=a.locust_seconds,
        out_md=a.out_md,
        out_json=a.out_json,
        raw_json=None if a.render_only else a.raw_json,
        render_only=a.render_only,
        compare=a.compare,
        notes=a.notes,
        gateway_ref=a.gateway_ref,
        quiet_pct=0.0 if quick else a.quiet_pct,
        quiet_timeout=a.quiet_timeout,
        quick=quick,
        keep_workdir=a.keep_workdir,
        command=" ".join(["python", "loadtest/bench.py", *(argv or sys.argv[1:])]),
    )


def write_outputs(options: Options, results: dict[str, Any]) -> None:
    rows = report.rows(results["runs"], options.targets)
    options.out_json.write_text(json.dumps(rows, indent=2) + "\n")
    other = json.loads(options.compare.read_text()) if options.compare else None
    notes = options.notes.read_text() if options.notes else None
    options.out_md.write_text(report.markdown(options, rows, results, other, notes))
    if options.raw_json is not None:
        options.raw_json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {options.out_md} and {options.out_json}", flush=True)


LOCK = Path(tempfile.gettempdir()) / "realtime-gateway-bench.lock"


@contextlib.contextmanager
def exclusive_machine(quick: bool) -> Iterator[None]:
    """One full benchmark at a time on this machine: two would measure each other. Quick
    mode (a smoke test whose numbers mean nothing) does not wait for it."""
    if quick:
        yield
        return
    with LOCK.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another benchmark holds {LOCK}; waiting for it to finish", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.render_only is not None:
        # Tables again from a saved --raw-json (e.g. after changing the report), no new runs.
        write_outputs(options, json.loads(options.render_only.read_text()))
        return 0
    with exclusive_machine(options.quick):
        return run_benchmark(options)


def run_benchmark(options: Options) -> int:
    check_tools()
    # This process only orchestrates; keep it (and what it records) off the proxy's CPU.
    os.sched_setaffinity(0, {LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="rgw-bench-"))
    bench = Bench(options, workdir)
    if options.gateway_ref:
        bench.gateway_code = targets.export_ref(options.gateway_ref, workdir / "gateway-code")
    started = time.monotonic()
    if options.only_mint:
        return run_mint_only(options, bench, started)
    try:
        if options.upstream == "replay":
            record_script(bench)
        relay_runs(bench)
        if "gateway" in options.targets and options.mint_seconds > 0:
            wait_for_quiet(options)
            mint_runs(bench)
        if options.locust_users and "gateway" in options.targets:
            from loadtest import locustrun

            bench.locust = locustrun.run(
                workdir,
                options.locust_users,
                options.locust_seconds,
                LOAD_CPU,
                PROXY_CPU,
                bench.gateway_code,
            )
    except BaseException:
        print(f"failed; logs are kept in {workdir}", file=sys.stderr, flush=True)
        raise
    results = {
        "meta": report.meta(options, started),
        "runs": bench.runs,
        "failed": bench.failed,
        "mint": bench.mint,
        "locust": bench.locust,
    }
    write_outputs(options, results)
    if options.keep_workdir or bench.failed:
        print(f"logs: {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bench.failed else 0


def run_mint_only(options: Options, bench: Bench, started: float) -> int:
    """``--only-mint``: the minting runs alone, as JSON on stdout; BENCHMARKS.md (which needs
    the relay runs) is left alone."""
    try:
        wait_for_quiet(options)
        mint_runs(bench)
    except BaseException:
        print(f"failed; logs are kept in {bench.workdir}", file=sys.stderr, flush=True)
        raise
    print(json.dumps(bench.mint, indent=2), flush=True)
    if options.raw_json is not None:
        meta = report.meta(options, started)
        results = {"meta": meta, "runs": [], "failed": [], "mint": bench.mint, "locust": None}
        options.raw_json.write_text(json.dumps(results, indent=2) + "\n")
    if not options.keep_workdir:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
