"""With MISBROKER_EDGE_PAGE_BYTES=0 no page is held in process memory: every read is the
route's (the hot tier in Redis still serves it), and nothing else changes."""

from __future__ import annotations

import pytest

from broker.settings import Settings
from tests.broker import test_read_lane
from tests.broker.test_partner_api import Partner, access_log
from tests.broker.test_read_lane import RouteCalls
from tests.support.admin import BASIC, World

world = test_read_lane.world  # the same fixtures, over the settings below
route = test_read_lane.route


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.cache.edge_page_bytes = 0
    return settings


def test_no_page_is_held_and_every_read_is_the_routes(world: World, route: RouteCalls) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    bodies = [partner.get(path) for _ in range(4)]
    assert [r.status_code for r in bodies] == [200] * 4
    assert len({r.content for r in bodies}) == 1
    assert route.count == 4
    edge = world.client.app.state.partner_reads.hot_reader.edge  # type: ignore[attr-defined]
    assert edge.page_bytes == 0
    assert len(access_log(world)) == 4
