"""`/docs` in a real browser: Swagger UI renders the API from the broker's own assets, under
a CSP without 'unsafe-inline', asking no other host for anything.

Here beside the console's browser tests for their live broker and Chromium fixtures.
"""

from __future__ import annotations

from playwright.sync_api import Browser, ConsoleMessage, Request

from tests.console.world import Console


def test_swagger_ui_renders_from_local_assets_under_the_csp(
    browser: Browser, console: Console
) -> None:
    base = console.broker.url
    context = browser.new_context(base_url=base)
    page = context.new_page()
    violations: list[str] = []
    elsewhere: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    def on_request(request: Request) -> None:
        if not request.url.startswith(base) and not request.url.startswith("data:"):
            elsewhere.append(request.url)

    page.on("console", on_console)
    page.on("request", on_request)
    response = page.goto("/docs")
    assert response is not None
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    # Rendered: the partner read operation is on the page, from /openapi.json.
    page.locator('[data-path="/v1/schools/{school_id}/data/{area}"]').first.wait_for(timeout=60_000)
    assert page.locator(".opblock").count() > 10
    context.close()
    assert violations == []
    assert elsewhere == []
