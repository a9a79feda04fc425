"""Agent authentication: `Authorization: Bearer <agent_key>`; a key belongs to one school."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request
from sqlalchemy import Connection, bindparam
from sqlmodel import col, select

from broker.deps import get_resources
from broker.errors import AuthenticationError, ForbiddenError
from broker.resources import Resources
from broker.schools.models import Agent, School, SchoolStatus
from broker.security import digest_secret

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="misbroker-agent"'}


@dataclass(frozen=True, slots=True)
class AgentPrincipal:
    agent_id: str
    school_id: str


def bearer_token(request: Request) -> str | None:
    return bearer_of(request.headers.get("authorization", ""))


def bearer_of(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


_PRINCIPAL_OF_KEY: Final = (
    select(
        col(Agent.id),
        col(Agent.school_id),
        col(Agent.revoked_at),
        col(School.status),
    )
    .select_from(Agent)
    .outerjoin(School, col(School.id) == col(Agent.school_id))
    .where(col(Agent.key_hash) == bindparam("key_hash"))
)


def authenticate_agent(connection: Connection, token: str | None) -> AgentPrincipal:
    """The agent a key belongs to, if it is live and its school open; one query, no ORM
    objects: every upload, poll and telemetry report starts here."""
    if not token:
        raise AuthenticationError(
            "an agent key is required (Authorization: Bearer)", headers=_CHALLENGE
        )
    row = connection.execute(_PRINCIPAL_OF_KEY, {"key_hash": digest_secret(token)}).first()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("unknown or revoked agent key", headers=_CHALLENGE)
    if row.status is not SchoolStatus.ACTIVE:
        raise ForbiddenError("this school is closed: uploads are no longer accepted")
    return AgentPrincipal(agent_id=row.id, school_id=row.school_id)


def get_agent(
    request: Request, resources: Annotated[Resources, Depends(get_resources)]
) -> AgentPrincipal:
    with resources.engine.connect() as connection:
        return authenticate_agent(connection, bearer_token(request))


AgentDep = Annotated[AgentPrincipal, Depends(get_agent)]
