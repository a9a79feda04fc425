"""Puts the console on the API's app: its pages, its assets, and `/` pointing at it."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse

from broker.console.pages import (
    access_log,
    admins,
    agent,
    decisions,
    home,
    partners,
    restrictions,
    sign_in,
    writes,
)
from broker.console.settings import ConsoleSettings
from broker.console.web import ASSET_HEADERS, HERE
from broker.edge import HeadersOnPaths


def install_console(app: FastAPI, settings: ConsoleSettings | None = None) -> None:
    assets = (settings or ConsoleSettings()).console_assets_dir
    if not (assets / "govuk-frontend.min.css").is_file():  # pragma: no cover
        raise RuntimeError(
            f"GOV.UK Frontend is missing at {assets}: run `make install` "
            "(npm ci --prefix broker/console/frontend) or set MISBROKER_CONSOLE_ASSETS_DIR"
        )
    root = APIRouter(include_in_schema=False)

    @root.get("/")
    def to_console() -> RedirectResponse:
        return RedirectResponse("/school", status_code=307)

    app.include_router(root)
    for module in (
        sign_in,
        home,
        partners,
        agent,
        writes,
        restrictions,
        access_log,
        admins,
        decisions,
    ):
        app.include_router(module.router)
    app.mount("/school/static/govuk", StaticFiles(directory=assets), name="govuk-frontend")
    app.mount("/school/static/console", StaticFiles(directory=HERE / "static"), name="console")
    # GOV.UK Frontend's stylesheet asks for its fonts and images at /assets.
    app.mount("/assets", StaticFiles(directory=assets / "assets"), name="govuk-assets")
    app.add_middleware(HeadersOnPaths, prefixes=("/assets/", "/school/"), headers=ASSET_HEADERS)
