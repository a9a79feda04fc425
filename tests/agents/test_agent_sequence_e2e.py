"""Small batches go several to a request (`POST /v1/agent/uploads/sequence`), against the real
broker: every batch is applied once and in order, fewer requests are made, and a sequence
that fails or meets an older broker leaves each batch to go alone, still applied once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agents.config import parse_config
from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from agents.state import AgentState
from agents.uploader import SEQUENCE_PATH, UPLOAD_PATH
from consent.areas import CORE_AREAS
from tests.agents.agent_broker import LiveBroker, add_school, upload_batches
from tests.agents.test_agent_e2e import DAY, assert_cache_equals_mis, broker

__all__ = ["broker"]  # the module-scoped broker of the e2e tests, used by name
_SCHOOLS = iter(range(6100, 6200))


class Counting(httpx.BaseTransport):
    """The real broker, counting each path; `answer` may replace a sequence's answer."""

    def __init__(self, answer: Callable[[httpx.Response], httpx.Response] | None = None) -> None:
        self._inner = httpx.HTTPTransport()
        self._answer = answer
        self.paths: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        response = self._inner.handle_request(request)
        if request.url.path == SEQUENCE_PATH and self._answer is not None:
            response.read()
            return self._answer(response)
        return response

    def close(self) -> None:
        self._inner.close()


def setup(
    tmp_path: Path, broker: LiveBroker, transport: Counting, **upload: Any
) -> tuple[str, Agent, SyntheticMis]:
    school_id, key = add_school(
        broker.data_dir, broker.redis_url, "Sequence School", f"386{next(_SCHOOLS):04d}"
    )
    mis = SyntheticMis(seed=41, pupils=200, phase="secondary", day=DAY)
    document = {
        "broker_url": broker.url,
        "agent_key": key,
        "state_dir": str(tmp_path / "agent-state"),
        "mis": {"adapter": "synthetic"},
        "upload": {"retry_budget_seconds": 60, "retry_cap_seconds": 2, **upload},
    }
    config = parse_config(document, tmp_path)
    agent = Agent(config, mis, AgentState.open(config.state_dir), transport=transport)
    return school_id, agent, mis


def extract_all(agent: Agent) -> list[str]:
    batch_ids: list[str] = []
    for area in sorted(CORE_AREAS):
        result = agent.extract(area, full=True)
        assert result.ok, result.describe()
        batch_ids += result.batch_ids
    return batch_ids


def test_a_schools_batches_go_in_few_requests_each_applied_once(
    tmp_path: Path, broker: LiveBroker
) -> None:
    transport = Counting()
    school_id, agent, mis = setup(tmp_path, broker, transport, batches_per_request=4)
    batch_ids = extract_all(agent)
    report = agent.flush()
    assert report.clean, report
    assert report.confirmed == batch_ids  # settled in outbox order
    # Four a request; a last one alone goes as a plain upload.
    assert len(batch_ids) > 8
    assert transport.paths[SEQUENCE_PATH] == len(batch_ids) // 4
    assert transport.paths[UPLOAD_PATH] == len(batch_ids) % 4
    assert sorted(b.batch_id for b in upload_batches(broker.settings(), school_id)) == sorted(
        batch_ids
    )
    assert_cache_equals_mis(broker, school_id, mis, CORE_AREAS)
    agent.close()


def test_one_batch_a_request_when_configured(tmp_path: Path, broker: LiveBroker) -> None:
    transport = Counting()
    school_id, agent, mis = setup(tmp_path, broker, transport, batches_per_request=1)
    batch_ids = extract_all(agent)
    assert agent.flush().clean
    assert transport.paths[SEQUENCE_PATH] == 0
    assert transport.paths[UPLOAD_PATH] == len(batch_ids)
    assert_cache_equals_mis(broker, school_id, mis, CORE_AREAS)
    agent.close()


def lost_answer(response: httpx.Response) -> httpx.Response:
    """The broker applied the sequence, but what came back is not its answer."""
    return httpx.Response(200, content=b'{"results": "lost"}')


def older_broker(response: httpx.Response) -> httpx.Response:
    return httpx.Response(404, json={"title": "Not found", "status": 404})


def cut_short(response: httpx.Response) -> httpx.Response:
    """Only the first upload's answer reaches the agent (the rest were applied too)."""
    answer = orjson.loads(response.content)
    return httpx.Response(200, json={**answer, "results": answer["results"][:1]})


@pytest.mark.parametrize("answer", [lost_answer, older_broker, cut_short])
def test_an_odd_sequence_answer_leaves_each_batch_applied_once(
    tmp_path: Path, broker: LiveBroker, answer: Callable[[httpx.Response], httpx.Response]
) -> None:
    transport = Counting(answer)
    school_id, agent, mis = setup(tmp_path, broker, transport)
    batch_ids = extract_all(agent)
    report = agent.flush()
    assert report.clean, report
    assert sorted(report.confirmed) == sorted(batch_ids)
    assert report.dead == []
    assert sorted(b.batch_id for b in upload_batches(broker.settings(), school_id)) == sorted(
        batch_ids
    )
    assert_cache_equals_mis(broker, school_id, mis, CORE_AREAS)
    if answer is cut_short:  # the batches not answered go again, together (replays)
        assert transport.paths[SEQUENCE_PATH] > 1
        assert transport.paths[UPLOAD_PATH] <= 1
    else:  # asked once; the rest of the flush goes one batch a request, replays or not
        assert transport.paths[SEQUENCE_PATH] == 1
        assert transport.paths[UPLOAD_PATH] == len(batch_ids)
    if answer is older_broker:  # and so it stays, for the agent's life
        assert len(extract_all(agent)) > 1
        assert agent.flush().clean
        assert transport.paths[SEQUENCE_PATH] == 1
    agent.close()
