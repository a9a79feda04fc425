"""How the console answers: templates, security headers, CSRF, errors as pages.

Every page is rendered here so every page gets the same headers: a Content-Security-Policy
whose only inline script is GOV.UK Frontend's one-line `js-enabled` marker (allowed by a
per-response nonce), no framing, no sniffing, no referrer beyond the origin, and
`Cache-Control: no-store` (pages hold pupil-adjacent data and one-time secrets).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, PackageLoader, PrefixLoader, select_autoescape
from starlette.datastructures import FormData

from broker.admin.consents import to_domain_error
from broker.clock import rfc3339
from broker.errors import DomainError
from broker.logging import request_id_var
from consent.areas import CATALOGUE
from consent.errors import ConsentError

HERE = Path(__file__).parent
CSRF_FIELD = "csrf_token"
log = logging.getLogger(__name__)
MAX_FORM_FIELDS = 200


@cache
def environment() -> Environment:
    env = Environment(
        loader=PrefixLoader(
            {
                "console": FileSystemLoader(HERE / "templates"),
                "govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja"),
            }
        ),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["instant"] = format_instant
    env.filters["rfc3339"] = rfc3339
    env.globals["catalogue"] = CATALOGUE
    return env


def format_instant(at: datetime | None) -> str:
    """`14:00 on Friday 4 December 2026 (UTC)`: how GOV.UK writes a time, in UTC."""
    if at is None:
        return ""
    at = at.astimezone(UTC)
    return f"{at:%H:%M} on {at:%A} {at.day} {at:%B %Y} (UTC)"


def _csp(nonce: str) -> str:
    return (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


STATIC_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def secure(response: Response, nonce: str | None = None) -> Response:
    """The console's security headers on one of its responses."""
    response.headers.update(STATIC_HEADERS)
    response.headers["Content-Security-Policy"] = _csp(nonce or secrets.token_urlsafe(16))
    response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    values: dict[str, Any] = {
        "request": request,
        "cspNonce": nonce,
        "csrf_token": getattr(request.state, "csrf_token", None),
        "signed_in": getattr(request.state, "console_admin", None),
        "school": getattr(request.state, "console_school", None),
        "path": request.url.path,
    }
    values.update(context or {})
    html = environment().get_template(f"console/{template}").render(values)
    response = HTMLResponse(html, status_code=status_code)
    secure(response, nonce)
    return response


def redirect(url: str, *, status_code: int = 303) -> RedirectResponse:
    response = RedirectResponse(url, status_code=status_code)
    secure(response)
    return response


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/school/sign-in?next={quote(target, safe='')}"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only, never another site."""
    if value and value.startswith("/school") and not value.startswith("//") and "\\" not in value:
        return value
    return "/school"


async def read_form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)


def csrf_ok(form: FormData, expected: str | None) -> bool:
    given = form.get(CSRF_FIELD)
    return (
        isinstance(given, str)
        and expected is not None
        and hmac.compare_digest(given.encode(), expected.encode())
    )


class SignInRequired(Exception):
    """No live console session: the browser goes to the sign-in page and comes back."""


class CsrfRefused(Exception):
    """A changing form without its token (or with another session's): nothing happens."""


class ConsoleRoute(APIRoute):
    """A console route: domain errors and missing sessions become pages, not problem JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return redirect(sign_in_url(request))
            except CsrfRefused:
                return render(
                    request,
                    "error.html",
                    {
                        "title": "This form has expired",
                        "detail": "Nothing was changed. Go back, reload the page and try again.",
                    },
                    status_code=403,
                )
            except ConsentError as exc:
                return _error_page(request, to_domain_error(exc))
            except DomainError as exc:
                return _error_page(request, exc)
            except (HTTPException, RequestValidationError):
                raise  # FastAPI's own answers (405, 422 on a malformed query) stand
            except Exception:
                # The same page, headers and all, not the bare 500 of the app's last resort.
                log.exception("console page failed: %s %s", request.method, request.url.path)
                return render(
                    request,
                    "error.html",
                    {
                        "title": "Sorry, there is a problem with the service",
                        "detail": "Nothing was changed. Try again later. If it happens again, "
                        f"tell your broker's operator this reference: {request_id_var.get()}",
                    },
                    status_code=500,
                )

        return handle


def _error_page(request: Request, exc: DomainError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"title": _ERROR_TITLES.get(exc.status, exc.title), "detail": exc.detail},
        status_code=exc.status,
    )


_ERROR_TITLES = {404: "Page not found", 409: "That cannot be done now", 403: "Not allowed"}


# Security headers on the console's static assets (pages set their own in `secure`).
ASSET_HEADERS: Mapping[str, str] = {
    **STATIC_HEADERS,
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
