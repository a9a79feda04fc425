"""Partner authentication for the read API: `Authorization: Bearer <access token>`."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aredis
from fastapi import Depends, Request

from broker.agenthub.auth import bearer_token
from broker.deps import get_state_redis
from broker.errors import AuthenticationError
from broker.partners.tokens import PartnerPrincipal, TokenCache

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="misbroker"'}
_EXPIRED = {"WWW-Authenticate": 'Bearer realm="misbroker", error="invalid_token"'}


async def get_partner(
    request: Request, redis: Annotated[aredis.Redis, Depends(get_state_redis)]
) -> PartnerPrincipal:
    return await authenticate_partner(request, redis)


async def authenticate_partner(
    request: Request, redis: aredis.Redis | None = None
) -> PartnerPrincipal:
    """The partner the bearer token names, or 401 (a plain call: the read path's)."""
    token = bearer_token(request)
    if token is None:
        raise AuthenticationError(
            "an access token is required: POST /oauth/token, then Authorization: Bearer",
            headers=_CHALLENGE,
        )
    tokens: TokenCache = request.app.state.token_cache
    principal = await tokens.resolve(redis or request.app.state.state_redis, token)
    if principal is None:
        raise AuthenticationError("the access token is unknown or expired", headers=_EXPIRED)
    return principal


PartnerDep = Annotated[PartnerPrincipal, Depends(get_partner)]
