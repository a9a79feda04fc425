"""Dependencies of the admin API: who is calling, and one unit of work per request.

Only a live admin token gets through.  Anything else presented to a changing endpoint (a
partner token, an agent key, garbage, nothing) is refused and the attempt is written to
`audit_events` in its own transaction, so the record survives the refusal.  Refusals are
aggregated per actor, endpoint and minute (the first, the 10th, the 100th, ... are written,
each with its count), so an anonymous flood cannot write rows without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import redis
import redis.asyncio as aredis
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from broker.admin.auth import ADMIN_TOKEN_PREFIX, AdminAuth, AdminIdentity, LoginOutcome
from broker.admin.consents import SchoolConsents
from broker.consent_wiring import ConsentRuntime, RuntimeDep
from broker.db import session_scope
from broker.deps import get_state_redis
from broker.errors import AuthenticationError, DomainError, ForbiddenError
from broker.logging import request_id_var
from broker.partners.tokens import resolve_token
from broker.schools.models import School
from broker.schools.repository import SchoolRepository
from broker.security import digest_secret
from consent.models import AuditEvent
from consent.repository import ConsentRepository

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="misbroker-admin"'}
_ADMIN_ONLY = "only a school admin can do this"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The token from POST /v1/admin/login (expires after 30 minutes).",
)


@dataclass(frozen=True)
class AdminContext:
    """One request of one admin: their school, the time, and a unit of work."""

    admin: AdminIdentity
    school: School
    now: datetime
    session: Session
    consents: SchoolConsents


async def current_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    runtime: RuntimeDep,
    redis_client: Annotated[aredis.Redis, Depends(get_state_redis)],
) -> AdminIdentity:
    token = credentials.credentials if credentials is not None else None
    now = runtime.resources.clock.now()
    if token is not None and token.startswith(ADMIN_TOKEN_PREFIX + "_"):
        identity = await run_in_threadpool(_resolve, runtime, token, now)
        if identity is not None:
            return identity
    actor, error = await _refusal(runtime, redis_client, token)
    if request.method not in SAFE_METHODS:
        await run_in_threadpool(_record_refusal, runtime, request, actor, error, now)
    raise error


CurrentAdminDep = Annotated[AdminIdentity, Depends(current_admin)]


def admin_context(admin: CurrentAdminDep, runtime: RuntimeDep) -> Iterator[AdminContext]:
    """Commit before the response is sent, then announce changed decisions to every process."""
    with open_admin_context(runtime, admin) as ctx:
        yield ctx


@contextmanager
def open_admin_context(runtime: ConsentRuntime, admin: AdminIdentity) -> Iterator[AdminContext]:
    """One unit of work of one admin, for the API and the console alike."""
    resources = runtime.resources
    now = resources.clock.now()
    with session_scope(resources.engine) as session:
        school = SchoolRepository(session).get(admin.school_id)
        if school is None:  # pragma: no cover - a session outliving its school
            raise AuthenticationError("this admin's school no longer exists")
        consents = SchoolConsents(
            session,
            school=school,
            actor=admin.actor,
            now=now,
            grace=resources.settings.consent.revocation_grace,
        )
        yield AdminContext(admin, school, now, session, consents)
    runtime.announce(consents.changed)


# scope="function": the exit code (commit, announce) runs before the response is sent, so a
# caller who got a 2xx can rely on the change being visible everywhere.
AdminDep = Annotated[AdminContext, Depends(admin_context, scope="function")]


def perform_login(
    runtime: ConsentRuntime, email: str, password: str, code: str, client_ip: str = "unknown"
) -> LoginOutcome:
    """One login attempt: rate limits first, then `AdminAuth` (which counts it before the
    hash, so a failure is recorded even if this request then fails)."""
    resources = runtime.resources
    now = resources.clock.now()
    if runtime.login_limiter is not None:
        runtime.login_limiter.hit(client_ip, email, now)
    with session_scope(resources.engine) as session:
        auth = AdminAuth(session, resources.sealer, runtime.admin_settings)
        outcome = auth.attempt(email, password, code, now)
    if outcome.error is not None:
        raise outcome.error
    return outcome


def perform_logout(runtime: ConsentRuntime, token: str) -> None:
    """Revoke one admin token: its session row goes, so the token resolves to nobody."""
    with session_scope(runtime.resources.engine) as session:
        AdminAuth(session, runtime.resources.sealer, runtime.admin_settings).revoke(token)


def _resolve(runtime: ConsentRuntime, token: str, now: datetime) -> AdminIdentity | None:
    resources = runtime.resources
    with session_scope(resources.engine) as session:
        return AdminAuth(session, resources.sealer, runtime.admin_settings).resolve(token, now)


async def _refusal(
    runtime: ConsentRuntime, redis_client: aredis.Redis, token: str | None
) -> tuple[str, DomainError]:
    """Who the caller seems to be (never the credential itself) and the problem to answer."""
    if token is None:
        return "anonymous", AuthenticationError(
            "sign in first: POST /v1/admin/login, then Authorization: Bearer <token>",
            headers=_CHALLENGE,
        )
    if token.startswith(ADMIN_TOKEN_PREFIX + "_"):
        return "admin-token:unknown", AuthenticationError(
            "the admin token is unknown or has expired: sign in again", headers=_CHALLENGE
        )
    if token.startswith("mbt_"):
        principal = await resolve_token(redis_client, token)
        actor = f"partner:{principal.partner_id}" if principal else "partner-token:unknown"
        return actor, ForbiddenError(f"{_ADMIN_ONLY}: a partner cannot manage consents")
    agent_id = await run_in_threadpool(_agent_id, runtime, token)
    if agent_id is not None:
        return f"agent:{agent_id}", ForbiddenError(
            f"{_ADMIN_ONLY}: an agent cannot manage consents"
        )
    return "unknown-credential", AuthenticationError(
        f"{_ADMIN_ONLY}: this is not an admin token", headers=_CHALLENGE
    )


def _agent_id(runtime: ConsentRuntime, token: str) -> str | None:
    with session_scope(runtime.resources.engine) as session:
        agent = SchoolRepository(session).agent_by_key_hash(digest_secret(token))
        return None if agent is None else agent.id


# The refusal that starts a minute's run for one actor and endpoint is written, then the
# 10th, 100th, ... (with the count so far): a flood writes a handful of rows, not one each.
_REFUSAL_WINDOW = 60


def _refusal_milestone(count: int) -> bool:
    return str(count).rstrip("0") == "1"  # 1, 10, 100, ...


def _record_refusal(
    runtime: ConsentRuntime, request: Request, actor: str, error: DomainError, now: datetime
) -> None:
    route = request.scope.get("route")
    endpoint = getattr(route, "name", None)
    count = _count_refusal(runtime, actor, f"{request.method} {endpoint}", now)
    if count is not None and not _refusal_milestone(count):
        return
    event = AuditEvent(
        at=now,
        actor=actor,
        action="admin_api.refused",
        target=f"{request.method} {request.url.path}"[:200],
        detail={
            "endpoint": endpoint,
            "status": error.status,
            "detail": error.detail,
            "request_id": request_id_var.get(),
            "count_this_minute": count,
        },
    )
    with session_scope(runtime.resources.engine) as session:
        ConsentRepository(session).add_audit(event)


def _count_refusal(runtime: ConsentRuntime, actor: str, endpoint: str, now: datetime) -> int | None:
    """This refusal's number within its minute for the actor and endpoint; None if unknown.

    Without the state Redis every refusal is written: the audit trail wins over the bound.
    """
    if runtime.state_redis is None:
        return None
    bucket = int(now.timestamp() // _REFUSAL_WINDOW)
    key = f"mb:refused:{actor}:{endpoint}:{bucket}"
    try:
        with runtime.state_redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * _REFUSAL_WINDOW)
            count, _ = pipe.execute()
    except redis.RedisError:
        log.warning("admin refusals: state Redis unavailable; writing each refusal")
        return None
    return int(count)
