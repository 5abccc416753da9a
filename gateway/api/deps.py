"""Request-scoped lookups shared by the routes: the services and who is calling."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from gateway.errors import Unauthenticated
from gateway.store.tenants import TenantRecord

if TYPE_CHECKING:
    from gateway.services import Services


def services(conn: HTTPConnection) -> Services:
    svc: Services = conn.app.state.services
    return svc


def bearer(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    key = conn.headers.get("api-key", "").strip()
    return key or None


async def tenant_of(conn: HTTPConnection) -> TenantRecord:
    """The tenant whose API key authenticates this request (client secrets are not accepted)."""
    key = bearer(conn)
    if key is None:
        raise Unauthenticated("You didn't provide an API key. Send 'Authorization: Bearer <key>'.")
    if key.startswith("ek_"):
        raise Unauthenticated("Client secrets cannot be used here: use the tenant's API key.")
    return await services(conn).store.tenants.authenticate(key)


def require_admin(conn: HTTPConnection) -> None:
    expected = services(conn).settings.admin_key
    given = bearer(conn)
    if expected is None:
        raise Unauthenticated("The admin API is disabled: set GATEWAY_ADMIN_KEY to enable it.")
    if given is None or not hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthenticated("Incorrect admin key provided.")
