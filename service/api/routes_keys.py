"""API keys (admin scope) and the caller's own usage (any scope).

POST   /v1/keys          create a key (the secret is in this one answer only)
GET    /v1/keys          list keys
GET    /v1/keys/{name}   one key with its usage
DELETE /v1/keys/{name}   revoke a key (at once, on every replica)
GET    /v1/usage         the caller's spend and what is left of its quotas, per minute and per day
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends

from service.api.auth import UserDep, key_store, require_admin
from service.api.protocol import KeyCreate, KeyLimitsSpec, KeyOut
from service.api.state import ServiceState, StateDep
from service.runtime.errors import StorageUnavailable
from service.store.keys import ApiKey, KeyLimits, QuotaLedger

router = APIRouter(prefix="/v1")
admin = [Depends(require_admin)]


def _out(record: ApiKey, secret: str | None = None) -> KeyOut:
    return KeyOut(
        name=record.name,
        scope=record.scope,
        created=record.created,
        limits=KeyLimitsSpec(**dataclasses.asdict(record.limits)),
        key=secret,
    )


def _ledger(state: ServiceState) -> QuotaLedger:
    if state.ledger is None:
        raise StorageUnavailable("Quotas are not available: the service has no Redis client.")
    return state.ledger


@router.post("/keys", response_model=KeyOut, dependencies=admin, summary="Create an API key (admin)")
async def create_key(body: KeyCreate, state: StateDep) -> KeyOut:
    secret, record = await key_store(state).create(
        body.name, body.scope, KeyLimits(**body.limits.model_dump())
    )
    return _out(record, secret)


@router.get("/keys", dependencies=admin, summary="List API keys (admin)")
async def list_keys(state: StateDep) -> dict[str, Any]:
    return {"object": "list", "data": [_out(record) for record in await key_store(state).list()]}


@router.get("/keys/{name}", dependencies=admin, summary="One API key and its usage (admin)")
async def show_key(name: str, state: StateDep) -> dict[str, Any]:
    record = await key_store(state).get(name)
    usage = await _ledger(state).usage(record.id, record.limits)
    return {**_out(record).model_dump(), "usage": usage}


@router.delete("/keys/{name}", dependencies=admin, summary="Revoke an API key (admin)")
async def revoke_key(name: str, state: StateDep) -> dict[str, Any]:
    record = await key_store(state).revoke(name)
    return {"object": "api_key", "name": record.name, "deleted": True}


@router.get("/usage", summary="The caller's spend and remaining quota")
async def usage(caller: UserDep, state: StateDep) -> dict[str, Any]:
    if caller.key is None:
        return {"object": "usage", "key": caller.name, "scope": caller.scope, "limits": None, "usage": None}
    return {
        "object": "usage",
        "key": caller.name,
        "scope": caller.scope,
        "limits": dataclasses.asdict(caller.key.limits),
        "usage": await _ledger(state).usage(caller.key.id, caller.key.limits),
    }
