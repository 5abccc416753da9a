"""Every Redis key and channel name the gateway uses, in one place.

Layout (``{...}`` is a Redis Cluster hash tag: everything of one tenant lives in one slot, so
each Lua script touches a single slot):

    rgw:tenants                         SET     ids of all tenants (admin listing)
    rgw:tenantkey:<hmac(key)>           STRING  tenant id; looked up before the tenant is known
    rgw:token:<hmac(token)>             HASH    one ephemeral client secret (TTL: expiry + grace)
    rgw:sid:<session>                   STRING  tenant id of a session (lookup by session id alone)
    rgw:replicas                        ZSET    replica id -> heartbeat expiry (ms, Redis clock)
    rgw:ratelimits:<credential>         HASH    name -> last rate_limits.updated entry (JSON)
    rgw:{t:<tenant>}:tenant             HASH    the tenant record
    rgw:{t:<tenant>}:leases             ZSET    session id -> lease expiry (ms, Redis clock)
    rgw:{t:<tenant>}:session:<session>  HASH    session record (TTL after end)
    rgw:{t:<tenant>}:ledger:<day>       HASH    usage of one UTC day, totals and per model
    rgw:{t:<tenant>}:applied:<day>      SET     ids of charges already applied (idempotence)
    rgw:{t:<tenant>}:tpm:<minute>       STRING  tokens charged in one 60 s window
    rgw:control                         pub/sub channel of commands to replicas
"""

from __future__ import annotations

import re

from gateway.errors import InvalidValue

PREFIX = "rgw"
CONTROL_CHANNEL = f"{PREFIX}:control"
TENANT_INDEX = f"{PREFIX}:tenants"
REPLICAS = f"{PREFIX}:replicas"

# Ids become parts of key names: no braces (they would break the hash tag), no separators that
# could make two different ids produce one key, bounded length.
_TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_CREDENTIAL = re.compile(r"^[A-Za-z0-9_./-]{1,160}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_tenant_id(tenant_id: str) -> str:
    if not _TENANT_ID.match(tenant_id):
        raise InvalidValue("Invalid tenant id.", param="tenant_id")
    return tenant_id


def check_session_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise InvalidValue("Invalid session id.", param="session_id")
    return session_id


def _tag(tenant_id: str) -> str:
    return f"{PREFIX}:{{t:{check_tenant_id(tenant_id)}}}"


def tenant(tenant_id: str) -> str:
    return f"{_tag(tenant_id)}:tenant"


def tenant_key(key_hash: str) -> str:
    return f"{PREFIX}:tenantkey:{key_hash}"


def token(token_hash: str) -> str:
    return f"{PREFIX}:token:{token_hash}"


def leases(tenant_id: str) -> str:
    return f"{_tag(tenant_id)}:leases"


def session(tenant_id: str, session_id: str) -> str:
    return f"{_tag(tenant_id)}:session:{check_session_id(session_id)}"


def session_pointer(session_id: str) -> str:
    return f"{PREFIX}:sid:{check_session_id(session_id)}"


def ledger_day(tenant_id: str, day: str) -> str:
    return f"{_tag(tenant_id)}:ledger:{_check_day(day)}"


def charges_applied(tenant_id: str, day: str) -> str:
    return f"{_tag(tenant_id)}:applied:{_check_day(day)}"


def tokens_minute(tenant_id: str, window_start: int) -> str:
    return f"{_tag(tenant_id)}:tpm:{window_start}"


def ratelimits(credential: str) -> str:
    if not _CREDENTIAL.match(credential):
        raise InvalidValue("Invalid credential id.", param="credential")
    return f"{PREFIX}:ratelimits:{credential}"


def _check_day(day: str) -> str:
    if not _DAY.match(day):
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}")
    return day
