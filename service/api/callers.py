"""Who is calling: jobs and idempotency keys belong to a caller.

Today every request is the anonymous caller. The API-key dependency (issue 10, service/api/auth.py) replaces
`caller_of` at merge, so a key sees and cancels only its own jobs and an admin key sees all.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool = False


ANONYMOUS = Caller("anonymous", is_admin=False)


def caller_of(request: Request) -> Caller:
    """The caller of `request`: anonymous until the auth dependency replaces this function."""
    return ANONYMOUS
