"""`python -m service.keys`: create, list, show (with usage) and revoke API keys in the service's Redis.

The same Redis and namespace as the service (TTC_REDIS_URL, TTC_KEYS_NAMESPACE, or the options below). A new
key's secret is printed once and never stored; only its sha256 is. Output is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from service.runtime.errors import ServiceError
from service.runtime.settings import Settings
from service.store.client import connect
from service.store.keys import KeyLimits, KeyStore, QuotaLedger

LIMIT_OPTIONS: dict[str, type] = {
    "tokens_per_minute": int,
    "tokens_per_day": int,
    "eflops_per_minute": float,
    "eflops_per_day": float,
    "max_concurrent": int,
    "max_tokens": int,
    "max_eflops": float,
    "max_seconds": float,
    "max_context_tokens": int,
}


def parser() -> argparse.ArgumentParser:
    defaults = Settings()
    main = argparse.ArgumentParser(prog="python -m service.keys", description=__doc__)
    main.add_argument("--redis-url", default=defaults.redis_url, help="Redis of the service")
    main.add_argument("--namespace", default=defaults.keys_namespace, help="keys namespace in Redis")
    commands = main.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print its secret (once)")
    create.add_argument("name")
    create.add_argument("--scope", choices=["user", "admin"], default="user")
    for name, kind in LIMIT_OPTIONS.items():
        create.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=f"{name} (unlimited)"
        )
    commands.add_parser("list", help="list keys")
    show = commands.add_parser("show", help="a key with its usage")
    show.add_argument("name")
    revoke = commands.add_parser("revoke", help="revoke a key (at once)")
    revoke.add_argument("name")
    return main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.redis_url, 5.0)
    store = KeyStore(redis, args.namespace)
    try:
        if args.command == "create":
            limits = KeyLimits(**{name: getattr(args, name) for name in LIMIT_OPTIONS})
            secret, record = await store.create(args.name, args.scope, limits)
            return {**record.describe(), "key": secret}
        if args.command == "list":
            return {"data": [record.describe() for record in await store.list()]}
        if args.command == "show":
            record = await store.get(args.name)
            usage = await QuotaLedger(redis, args.namespace).usage(record.id, record.limits)
            return {**record.describe(), "usage": usage}
        record = await store.revoke(args.name)
        return {"name": record.name, "revoked": True, "limits": dataclasses.asdict(record.limits)}
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        print(json.dumps(asyncio.run(run(args)), indent=2))
    except ServiceError as exc:
        print(f"python -m service.keys: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
