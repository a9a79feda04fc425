"""What every console test checks on every page it visits: axe-core, security headers,
CSRF fields, and screenshots at a desktop and a phone width.

Problems are collected rather than raised at once, so one run of a journey reports every
page's faults; the `visitor` fixture fails the test with all of them at its end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, Response, ViewportSize

from tests.agents.agent_broker import ROOT

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_JS = ROOT / "broker/console/frontend/node_modules/axe-core/axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=800)
# Pages a signed-out browser may see and cache: every other console page must not be stored.
CACHEABLE = frozenset({"/school/sign-in"})


@cache
def axe_source() -> str:
    return AXE_JS.read_text()


def accessibility_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page, one line per rule.

    The script is evaluated through the DevTools protocol, which the page's CSP does not
    govern, so the console's strict policy need not be loosened for the test.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    result: dict[str, Any] = page.evaluate(
        """async (tags) => {
            const r = await axe.run(document, {
                runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'],
            });
            return {violations: r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(' ')),
            }))};
        }""",
        AXE_TAGS,
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {', '.join(v['targets'][:5])}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_accessibility(page: Page) -> None:
    """Fail listing every serious or critical axe-core violation on the page."""
    found = accessibility_violations(page)
    assert not found, f"{page.url}:\n" + "\n".join(found)


def csp_directives(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def header_problems(url: str, method: str, headers: dict[str, str]) -> list[str]:
    """What a console response lacks of the issue's security headers."""
    path = urlsplit(url).path
    if path.startswith("/school/static") or path.startswith("/school/assets"):
        return []
    problems = []
    if headers.get("x-content-type-options", "").lower() != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    signed_in = path.startswith("/school") and not (method == "GET" and path in CACHEABLE)
    if signed_in and "no-store" not in headers.get("cache-control", ""):
        problems.append(f"Cache-Control is {headers.get('cache-control')!r}, not no-store")
    if not headers.get("content-type", "").startswith("text/html"):
        return problems
    if not headers.get("referrer-policy"):
        problems.append("no Referrer-Policy")
    policy = headers.get("content-security-policy")
    if not policy:
        return [*problems, "no Content-Security-Policy"]
    csp = csp_directives(policy)
    scripts = csp.get("script-src", csp.get("default-src"))
    if scripts is None:
        problems.append("CSP restricts no scripts (no script-src nor default-src)")
    elif "'unsafe-inline'" in scripts:
        problems.append("CSP allows 'unsafe-inline' scripts")
    if csp.get("frame-ancestors") != ["'none'"]:
        problems.append(f"CSP frame-ancestors is {csp.get('frame-ancestors')}, not 'none'")
    return problems


@dataclass
class Visitor:
    """Checks and photographs each page a test reaches; collects what is wrong."""

    page: Page
    name: str
    axe: bool = True
    problems: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)
    _responses: list[tuple[str, str, int, dict[str, str]]] = field(default_factory=list)
    _step: int = 0

    def __post_init__(self) -> None:
        self.page.on("response", self._seen)

    def _seen(self, response: Response) -> None:
        request = response.request
        if request.resource_type == "document" and request.frame == self.page.main_frame:
            seen = (response.url, request.method, response.status, response.headers)
            self._responses.append(seen)

    def visit(self, step: str) -> None:
        """The page as it stands: headers of how it came, forms, axe, two screenshots."""
        page = self.page
        page.wait_for_load_state("load")
        self.check_responses()
        where = f"{step} ({urlsplit(page.url).path})"
        for form in page.locator("form").all():
            if (form.get_attribute("method") or "get").lower() != "post":
                continue
            if form.locator("input[type=hidden][name=csrf_token]").count() != 1:
                action = form.get_attribute("action") or page.url
                self.problems.append(f"{where}: form posting to {action} has no csrf_token")
        if not page.title().strip():
            self.problems.append(f"{where}: the page has no title")
        if page.locator("h1").count() != 1:
            self.problems.append(f"{where}: {page.locator('h1').count()} h1 headings, not one")
        if self.axe:
            self.problems += [f"{where}: {v}" for v in accessibility_violations(page)]
        self.screenshot(step)

    def check_responses(self) -> None:
        for url, method, status, headers in self._responses:
            if status < 300 or status >= 400:
                path = urlsplit(url).path
                found = header_problems(url, method, headers)
                self.problems += [f"{method} {path}: {p}" for p in found]
        self._responses.clear()

    def screenshot(self, step: str) -> None:
        self._step += 1
        slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        SCREENSHOTS.mkdir(exist_ok=True)
        original = self.page.viewport_size or DESKTOP
        for label, size in (("1280", DESKTOP), ("375", PHONE)):
            self.page.set_viewport_size(size)
            path = SCREENSHOTS / f"{self.name}--{self._step:02d}-{slug}--{label}.png"
            self.page.screenshot(path=str(path), full_page=True)
            self.shots.append(path)
        self.page.set_viewport_size(original)
