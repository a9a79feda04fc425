"""Agent authentication: `Authorization: Bearer <agent_key>`; a key belongs to one school."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from broker.db import session_scope
from broker.deps import get_resources
from broker.errors import AuthenticationError, ForbiddenError
from broker.resources import Resources
from broker.schools.models import Agent, School, SchoolStatus
from broker.schools.repository import SchoolRepository
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


def authenticate_agent(session: Session, token: str | None) -> tuple[Agent, School]:
    if not token:
        raise AuthenticationError(
            "an agent key is required (Authorization: Bearer)", headers=_CHALLENGE
        )
    repo = SchoolRepository(session)
    agent = repo.agent_by_key_hash(digest_secret(token))
    if agent is None or agent.revoked_at is not None:
        raise AuthenticationError("unknown or revoked agent key", headers=_CHALLENGE)
    school = repo.get(agent.school_id)
    if school is None or school.status is not SchoolStatus.ACTIVE:
        raise ForbiddenError("this school is closed: uploads are no longer accepted")
    return agent, school


def get_agent(
    request: Request, resources: Annotated[Resources, Depends(get_resources)]
) -> AgentPrincipal:
    with session_scope(resources.engine) as session:
        agent, school = authenticate_agent(session, bearer_token(request))
    return AgentPrincipal(agent_id=agent.id, school_id=school.id)


AgentDep = Annotated[AgentPrincipal, Depends(get_agent)]
