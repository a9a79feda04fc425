"""Fixtures of the console's tests.

Browser tests: one live broker and one Chromium per session, a fresh school (with its admin
and a partner) and a fresh browser context per test.  Page tests without a browser: the
admin API's `World` (two schools, their admins, two partners) on the in-process app, and
`signed_in`, the same world with its first admin signed in to the console.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from broker.clock import FrozenClock
from tests.agents.agent_broker import LiveBroker
from tests.console.browser import CHROMIUM, DESKTOP, LAUNCH_ARGS, Visitor
from tests.console.world import BrokerClock, Console, Tenant, start_of_minute
from tests.support.admin import World, build_world, cheap_argon2
from tests.support.console import sign_in


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console")
    clock = BrokerClock(data_dir / "clock.txt", start_of_minute(datetime.now(UTC)))
    broker = LiveBroker(data_dir, redis_url, env={"MISBROKER_CLOCK": f"file:{clock.path}"})
    world = Console(broker, clock)
    world.cli("db", "upgrade")  # the API process expects a migrated database
    broker.start()
    try:
        yield world
    finally:
        broker.stop()


@pytest.fixture
def tenant(console: Console) -> Tenant:
    return console.tenant()


# Per module, not per session: Playwright's sync API keeps an event loop running in this
# thread while it is open, and a later test calling asyncio.run() (the soak) would fail.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium (make test does)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
    )
    yield chromium
    chromium.close()


def new_context(browser: Browser, console: Console, *, javascript: bool = True) -> BrowserContext:
    context = browser.new_context(
        base_url=console.url, viewport=DESKTOP, java_script_enabled=javascript
    )
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def context(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    ctx = new_context(browser, console)
    yield ctx
    ctx.close()


def slug_of(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_")).strip("-")


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def visitor(page: Page, request: pytest.FixtureRequest) -> Iterator[Visitor]:
    """Every page the test shows it: at the end, the test fails listing all it found."""
    seen = Visitor(page, slug_of(request))
    yield seen
    seen.check_responses()
    if seen.problems and not request.node.stash.get(CALL_FAILED, False):
        pytest.fail("pages with problems:\n" + "\n".join(seen.problems), pytrace=False)


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test reports the page problems found before it failed, in its own report."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[CALL_FAILED] = True
        seen = getattr(item, "funcargs", {}).get("visitor")
        if isinstance(seen, Visitor) and seen.problems:
            report.sections.append(("page problems found before", "\n".join(seen.problems)))
    return report


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    return build_world(client, clock)


@pytest.fixture
def signed_in(world: World) -> World:
    sign_in(world)
    return world
