"""`/docs`: Swagger UI from a pinned npm package, served by the broker under a strict CSP.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN, unpinned, and start them
with an inline script.  These are off in production (the contract is `/openapi.json`); in
development and test `/docs` is this page, whose scripts, styles and images all come from
the broker itself.  If the package is not installed (an image built without the source
tree), the page is simply absent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import HTMLResponse

from broker.edge import HeadersOnPaths

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
IN_TREE_SWAGGER_UI: Final = (
    HERE.parent / "console" / "frontend" / "node_modules" / "swagger-ui-dist"
)
STATIC_PREFIX: Final = "/docs/static"
# Swagger UI sets styles through the DOM (allowed) and shows data: images; it fetches only
# the broker's own OpenAPI document and, from "Try it out", the broker's own API.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class ApiDocsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    # swagger-ui-dist's folder; `make install` puts it in the source tree.
    api_docs_assets_dir: Path = IN_TREE_SWAGGER_UI


def page(openapi_url: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>misbroker API</title>
  <link rel="stylesheet" href="{STATIC_PREFIX}/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
  <script src="{STATIC_PREFIX}/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="{STATIC_PREFIX}/app/init.js"></script>
</body>
</html>
"""


def install_api_docs(app: FastAPI, settings: ApiDocsSettings | None = None) -> None:
    """Serve `/docs` from local assets; call only where the docs are wanted (not production)."""
    assets = (settings or ApiDocsSettings()).api_docs_assets_dir
    if not (assets / "swagger-ui-bundle.js").is_file():
        log.warning("no /docs: swagger-ui-dist is missing at %s (run `make install`)", assets)
        return
    openapi_url = app.openapi_url or "/openapi.json"
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    def docs() -> HTMLResponse:
        return HTMLResponse(page(openapi_url))

    app.include_router(router)
    app.mount(f"{STATIC_PREFIX}/swagger-ui", StaticFiles(directory=assets), name="swagger-ui")
    app.mount(f"{STATIC_PREFIX}/app", StaticFiles(directory=HERE / "static"), name="api-docs")
    headers = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
    app.add_middleware(HeadersOnPaths, prefixes=("/docs",), headers=headers)
