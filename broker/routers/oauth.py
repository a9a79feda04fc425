"""OAuth 2.0 token endpoint: client credentials grant (RFC 6749 §4.4).

Errors here follow RFC 6749 §5.2 (`{"error": ...}`), not RFC 9457: that is what every OAuth
client library parses.
"""

from __future__ import annotations

import base64
from collections import Counter
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import unquote_plus

import redis.asyncio as aredis
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from broker.clock import Clock
from broker.db import session_scope
from broker.deps import get_clock, get_redis, get_resources, get_state_redis
from broker.partners.models import PartnerStatus
from broker.partners.repository import PartnerRepository
from broker.partners.service import client_secret_valid
from broker.partners.tokens import PartnerPrincipal, issue_token, mint_wait
from broker.resources import Resources

router = APIRouter(tags=["oauth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_OAUTH_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "error_description": {"type": "string"},
                },
                "required": ["error"],
            }
        }
    }
}


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 scheme name
    expires_in: int


def _error(status: int, error: str, description: str, basic: bool = False) -> JSONResponse:
    headers = dict(_NO_STORE)
    if basic:
        headers["WWW-Authenticate"] = 'Basic realm="misbroker"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error, and non-ASCII input
        return None
    client_id, sep, secret = decoded.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else None


def _check_client(
    resources: Resources, client_id: str, secret: str, now: datetime
) -> PartnerPrincipal | None:
    with session_scope(resources.engine) as session:
        partner = PartnerRepository(session).by_client_id(client_id)
        if partner is None or partner.status is not PartnerStatus.ACTIVE:
            return None
        if not client_secret_valid(partner, secret, now):
            return None
        return PartnerPrincipal(
            partner_id=partner.id,
            client_id=partner.client_id,
            rate_limit_per_minute=partner.rate_limit_per_minute,
        )


@router.post(
    "/oauth/token",
    response_model=TokenResponse,
    summary="Exchange client credentials for a short-lived bearer token",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "scope": {"type": "string"},
                        },
                        "required": ["grant_type"],
                    }
                }
            },
        }
    },
    responses={400: _OAUTH_ERROR, 401: _OAUTH_ERROR, 429: _OAUTH_ERROR},
)
async def token(
    request: Request,
    resources: Annotated[Resources, Depends(get_resources)],
    redis: Annotated[aredis.Redis, Depends(get_redis)],
    state: Annotated[aredis.Redis, Depends(get_state_redis)],
    clock: Annotated[Clock, Depends(get_clock)],
) -> Any:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return _error(400, "invalid_request", "send application/x-www-form-urlencoded")
    form = await request.form()
    counts = Counter(name for name, _ in form.multi_items())
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:  # RFC 6749 §3.2: parameters MUST NOT be included more than once
        return _error(400, "invalid_request", f"repeated parameter: {', '.join(repeated[:5])}")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if fields.get("grant_type") != "client_credentials":
        return _error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic_credentials(request.headers.get("authorization", ""))
    in_form = "client_id" in fields or "client_secret" in fields
    if basic is not None and in_form:
        return _error(400, "invalid_request", "use one client authentication method, not two")
    client_id, secret = basic or (fields.get("client_id", ""), fields.get("client_secret", ""))
    principal = None
    if client_id and secret:
        principal = await run_in_threadpool(
            _check_client, resources, client_id, secret, clock.now()
        )
    if principal is None:
        return _error(401, "invalid_client", "unknown client or wrong secret", basic=True)
    now = clock.now()
    per_minute = resources.settings.broker.token_mint_per_minute
    wait = await mint_wait(state, principal.partner_id, now, per_minute)
    if wait is not None:
        response = _error(
            429, "slow_down", f"at most {per_minute} tokens a minute: reuse the one you have"
        )
        response.headers["Retry-After"] = str(wait)
        return response
    # Tokens in the state Redis, revocations announced where every process listens.
    issued = await issue_token(state, principal, now, publisher=redis)
    return JSONResponse(
        TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in).model_dump(),
        headers=_NO_STORE,
    )
