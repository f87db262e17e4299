"""Who is calling: `Authorization: Bearer <key>` (OpenAI's convention) checked against the keys in Redis on every
request (so a revocation takes effect at once), and the scope each route needs.

With no key configured (none in Redis and no `admin_key`), callers are anonymous: scope `admin` while the
service listens on loopback (the zero-setup default; any bearer token, e.g. the openai client's placeholder, is
ignored), scope `user` on another address only with `allow_anonymous`, else refused. Once a key exists, every
caller needs one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.api.state import ServiceState, StateDep
from service.runtime.budget import BudgetLimits
from service.runtime.errors import AuthenticationFailed, PermissionDenied, StorageUnavailable
from service.runtime.settings import Settings
from service.store.keys import ApiKey, KeyStore, Scope, same_secret

ANONYMOUS = "anonymous"
BOOTSTRAP_ADMIN = "admin-bootstrap"  # the caller of TTC_ADMIN_KEY


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request; `key` is None for anonymous and bootstrap-admin callers."""

    name: str
    scope: Scope
    key: ApiKey | None = None

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def ceiling(self) -> BudgetLimits | None:
        """The key's per-request caps on every budget axis (None: no key, no ceiling)."""
        if self.key is None:
            return None
        limits = self.key.limits
        return BudgetLimits(
            tokens=limits.max_tokens,
            eflops=limits.max_eflops,
            seconds=limits.max_seconds,
            context_tokens=limits.max_context_tokens,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def anonymous_caller(settings: Settings) -> Caller | None:
    """Who an unauthenticated caller is while no key exists, or None if anonymous callers are refused."""
    if is_loopback(settings.host):
        return Caller(ANONYMOUS, "admin")
    if settings.allow_anonymous:
        return Caller(ANONYMOUS, "user")
    return None


def key_store(state: ServiceState) -> KeyStore:
    if state.keys is None:
        raise StorageUnavailable("API keys are not available: the service has no Redis client.")
    return state.keys


async def authenticate(request: Request, state: StateDep) -> Caller:
    """The caller of this request (cached per request by FastAPI, so one Redis lookup per request)."""
    settings = state.settings
    store = key_store(state)
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip() if scheme.lower() == "bearer" else ""
    admin_key = settings.admin_key or None  # an empty TTC_ADMIN_KEY is no key
    if admin_key is None and not await store.any():
        caller = anonymous_caller(settings)
        if caller is None:
            raise AuthenticationFailed(
                "No API keys are configured and anonymous access is off on this address; "
                "create a key (python -m service.keys create) or start with --allow-anonymous."
            )
    elif not secret:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
        )
    elif admin_key is not None and same_secret(secret, admin_key):
        caller = Caller(BOOTSTRAP_ADMIN, "admin")
    else:
        record = await store.lookup(secret)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided (unknown or revoked).")
        caller = Caller(record.name, record.scope, record)
    request.state.caller = caller
    return caller


async def require_user(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """Any valid key (scope `user` or `admin`)."""
    return caller


async def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """A key with scope `admin`: writes to shared state, calibration, key management."""
    if caller.scope != "admin":
        raise PermissionDenied(
            f"This needs an admin key; the key {caller.name!r} has scope {caller.scope!r}."
        )
    return caller


UserDep = Annotated[Caller, Depends(require_user)]
AdminDep = Annotated[Caller, Depends(require_admin)]


def caller_of(request: Request) -> Caller:
    """The caller the auth dependency found for this request (anonymous on a route without one)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    return caller if caller is not None else Caller(ANONYMOUS, "user")
