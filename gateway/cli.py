"""``realtime-gateway``: serve | sim | tenants | sessions | usage. Argv and signals live here."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import httpx
import uvicorn

from gateway.config import Settings, load_settings

log = logging.getLogger("gateway.cli")


class _DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains the gateway before the server stops.

    A second signal stops at once (the usual "press Ctrl-C twice").
    """

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self._settings = settings
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self._drain_task is not None or loop is None:
            super().handle_exit(sig, frame)
            return
        # A signal handler runs between two bytecodes of the loop's thread: only schedule.
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(
                self._drain_then_exit(), name="drain"
            )

    async def _drain_then_exit(self) -> None:
        services = getattr(self.config.loaded_app, "state", None)
        app: Any = self.config.loaded_app
        # loaded_app may be wrapped by uvicorn's middlewares; find the FastAPI app's services.
        while services is None or not hasattr(services, "services"):
            app = getattr(app, "app", None)
            if app is None:
                break
            services = getattr(app, "state", None)
        try:
            if services is not None and hasattr(services, "services"):
                await services.services.drain(self._settings.drain_seconds)
        except Exception:
            log.exception("drain failed; stopping now")
        finally:
            self.should_exit = True


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.demo:
        overrides["demo"] = True
    settings = load_settings(**overrides)
    from gateway.app import create_app
    from gateway.logs import configure_logging
    from gateway.server import uvicorn_config

    configure_logging(settings)
    app = create_app(settings)
    config = uvicorn_config(
        app,
        settings,
        # The drain already ended every session within GATEWAY_DRAIN_SECONDS; what is left to
        # close at shutdown is idle HTTP connections, so do not spend long on it.
        timeout_graceful_shutdown=1,
    )
    server = _DrainingServer(config, settings)
    server.run()
    return 0


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim import SimConfig, run_sim

    keys = tuple(args.api_key or [os.environ.get("SIM_API_KEY", "sk-sim")])
    run_sim(
        SimConfig(api_keys=keys, speed=args.speed, refuse_beta=args.refuse_beta),
        args.host,
        args.port,
    )
    return 0


def _admin_client(args: argparse.Namespace) -> httpx.Client:
    key = args.admin_key or os.environ.get("GATEWAY_ADMIN_KEY")
    if not key:
        raise SystemExit("an admin key is needed: --admin-key or GATEWAY_ADMIN_KEY")
    return httpx.Client(
        base_url=args.url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> int:
    with _admin_client(args) as client:
        response = client.request(method, path, json=body)
    try:
        payload = response.json()
    except ValueError:
        payload = {"status": response.status_code, "body": response.text}
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if response.is_success else 1


def _tenants(args: argparse.Namespace) -> int:
    if args.action == "create":
        body: dict[str, Any] = {"name": args.name or ""}
        if args.id:
            body["id"] = args.id
        if args.models:
            body["models"] = args.models.split(",")
        if args.max_sessions is not None:
            body["limits"] = {"max_concurrent_sessions": args.max_sessions}
        return _call(args, "POST", "/admin/tenants", body)
    if args.action == "list":
        return _call(args, "GET", "/admin/tenants")
    if args.action == "show":
        return _call(args, "GET", f"/admin/tenants/{args.tenant}")
    if args.action == "disable":
        return _call(args, "POST", f"/admin/tenants/{args.tenant}/disable")
    if args.action == "enable":
        return _call(args, "POST", f"/admin/tenants/{args.tenant}/enable")
    return _call(args, "POST", f"/admin/tenants/{args.tenant}/rotate-key")


def _sessions(args: argparse.Namespace) -> int:
    if args.action == "list":
        query = f"?tenant={args.tenant}" if args.tenant else ""
        return _call(args, "GET", f"/admin/sessions{query}")
    if args.action == "show":
        return _call(args, "GET", f"/admin/sessions/{args.session}")
    if args.action == "end":
        return _call(args, "DELETE", f"/admin/sessions/{args.session}")
    return _call(args, "DELETE", f"/admin/tenants/{args.tenant}/sessions")


def _usage(args: argparse.Namespace) -> int:
    query = f"?tenant={args.tenant}" if args.tenant else ""
    return _call(args, "GET", f"/admin/usage{query}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime-gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (settings from GATEWAY_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--demo", action="store_true", help="create a demo tenant, print its key")
    serve.set_defaults(func=_serve)

    sim = sub.add_parser("sim", help="run the simulated upstream on its own")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9090)
    sim.add_argument("--api-key", action="append", help="accepted key (repeatable)")
    sim.add_argument("--speed", type=float, default=1.0, help="audio pacing, 0 = no pacing")
    sim.add_argument("--refuse-beta", action="store_true", help="behave like OpenAI today")
    sim.set_defaults(func=_sim)

    def admin_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"))
        p.add_argument("--admin-key")

    tenants = sub.add_parser("tenants", help="manage tenants through a running gateway")
    tsub = tenants.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create")
    create.add_argument("--id")
    create.add_argument("--name")
    create.add_argument("--models", help="comma-separated allow-list")
    create.add_argument("--max-sessions", type=int)
    tsub.add_parser("list")
    for action in ("show", "disable", "enable", "rotate-key"):
        tsub.add_parser(action).add_argument("tenant")
    for p in tsub.choices.values():
        admin_args(p)
    tenants.set_defaults(func=_tenants)

    sessions = sub.add_parser("sessions", help="list or end live sessions on any replica")
    ssub = sessions.add_subparsers(dest="action", required=True)
    ssub.add_parser("list").add_argument("--tenant")
    ssub.add_parser("show").add_argument("session")
    ssub.add_parser("end").add_argument("session")
    ssub.add_parser("end-tenant").add_argument("tenant")
    for p in ssub.choices.values():
        admin_args(p)
    sessions.set_defaults(func=_sessions)

    usage = sub.add_parser("usage", help="usage of all tenants, or of one")
    usage.add_argument("--tenant")
    admin_args(usage)
    usage.set_defaults(func=_usage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
