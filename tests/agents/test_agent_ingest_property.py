"""Property: whatever sequence of good and broken exports the agent reads, the broker
never loses a record the last good export held (less what it really deleted) and never
holds a record of another school.

The two-school trust export (`bundles/bradford_two_schools_1_1`, school `hpp` chosen) is
re-written before each step: a good export may drop pupils who left; a delta export marks
pupils `tobedeleted` and adds a pupil of the other school; a broken one is a header-only
or missing users file, a US-order date, a row with a value too many, an old demographics
header or an unknown grade.

The broker is the real one: its FastAPI app (`broker.app.create_app`) over a real SQLite
database and the real Redis, reached through an httpx transport onto the app
(`tests/agents/app_broker.py`), and read back through its own cache service.  The app is
built once for the module; each hypothesis example registers a school of its own, so
examples never see each other's data.  Every step is driven by state, never by time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.mis.oneroster import OneRosterMis, Options
from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_fakes import make_config
from tests.agents.app_broker import AppBroker, app_broker

BUNDLE = Path(__file__).parent / "bundles" / "bradford_two_schools_1_1"
PUPILS = ("hp-s1", "hp-s2", "hp-s3")
AREAS = ("students.basic", "students.contact_details", "groups", "contacts", "staff.basic")
BREAKS = ("header_only", "no_users", "us_date", "extra_value", "old_demographics", "ungraded")
GOOD = ("good", "delta")

Step = tuple[str, frozenset[str], bool]  # (a break, "good" or "delta"; who left; full?)
steps = st.lists(
    st.tuples(
        st.sampled_from((*GOOD, *BREAKS)),
        st.frozensets(st.sampled_from(PUPILS), max_size=2),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)
DELTA_MANIFEST = (
    "propertyName,value\noneroster.version,1.1\nfile.users,delta\nfile.orgs,absent\n"
    "file.classes,absent\nfile.enrollments,absent\nfile.demographics,absent\n"
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[AppBroker]:
    with app_broker(tmp_path_factory.mktemp("broker"), redis_url) as running:
        yield running


def write_export(folder: Path, kind: str, left: frozenset[str]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(BUNDLE, folder)
    users, demographics = folder / "Users.csv", folder / "Demographics.csv"
    lines = users.read_text(encoding="utf-8").splitlines()
    if kind == "delta":
        write_delta(folder, lines[0], left)
        return
    if kind == "good":
        lines = [line for line in lines if line.split(",", 1)[0] not in left]
    elif kind == "header_only":
        lines = lines[:1]
    elif kind == "extra_value":
        lines = [line + ",surplus" if line.startswith("hp-s2,") else line for line in lines]
    elif kind == "ungraded":
        lines = [line.replace(",par-2,R,", ",par-2,UG,") for line in lines]
    users.write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = demographics.read_text(encoding="utf-8")
    if kind == "us_date":
        demographics.write_text(text.replace("17/04/2018", "4/17/2018"), encoding="utf-8")
    elif kind == "old_demographics":
        demographics.write_text(text.replace("sourcedId,", "userSourcedId,", 1), encoding="utf-8")
    elif kind == "no_users":
        users.unlink()


def write_delta(folder: Path, header: str, left: frozenset[str]) -> None:
    """Only changed users: those who left, `tobedeleted`, and a new pupil of the other school."""
    for name in ("Orgs.csv", "Classes.csv", "ENROLLMENTS.csv", "Demographics.csv"):
        (folder / name).unlink()
    (folder / "Manifest.csv").write_text(DELTA_MANIFEST, encoding="utf-8")
    rows = [f"{pupil},tobedeleted,,true,hpp,student" + "," * 12 for pupil in sorted(left)]
    rows.append("ml-s3,active,,true,mlp,student,,,Zara,Ali,,,,,,,03,")
    (folder / "Users.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


@settings(
    max_examples=25,
    deadline=None,
    # The module's broker is shared on purpose: each example registers its own school.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(sequence=steps)
def test_the_broker_never_loses_a_good_exports_records_nor_takes_another_schools(
    broker: AppBroker, sequence: list[Step]
) -> None:
    school_id, key = broker.add_school()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        export = root / "export"
        write_export(export, "good", frozenset())
        config = make_config(root, broker_url="http://127.0.0.1:9", agent_key=key)
        clock = broker.agent_clock()
        mis = OneRosterMis(export, Options(school="hpp"), roster=config.state_dir / "oneroster")
        agent = Agent(
            config,
            mis,
            AgentState.open(config.state_dir),
            clock=clock,
            sleep=clock.sleep,
            transport=broker.transport(),
        )

        def held() -> dict[str, dict[str, dict[str, Any]]]:
            return {area: broker.records(school_id, area) for area in AREAS}

        try:
            for area in AREAS:
                assert agent.extract(area, full=True).ok
            assert agent.flush().clean
            pupils = set(PUPILS)  # the last good export's pupils, less its real deletions
            good = held()  # what the broker held after the last good export
            for kind, left, full in sequence:
                clock.advance(60)
                write_export(export, kind, left)
                results = {area: agent.extract(area, full=full) for area in AREAS}
                assert agent.flush().clean
                now = held()
                if kind in GOOD and results["students.basic"].held is None:
                    gone = left if kind == "delta" else pupils - (set(PUPILS) - left)
                    assert not set(now["students.basic"]) & gone  # its deletions happened
                    pupils = (pupils - left) if kind == "delta" else set(PUPILS) - left
                    if kind == "good":
                        assert set(now["students.basic"]) == pupils  # and no other
                if kind in GOOD:
                    # What a good export really did, area by area; an area it would empty
                    # (pupils left one by one) is held, and keeps what it had.
                    good |= {a: now[a] for a, r in results.items() if r.held is None}
                assert set(now["students.basic"]) >= pupils
                for area, records in now.items():
                    kept = set(good[area])
                    assert set(records) >= kept, area  # a broken export deletes nothing
                    assert not [i for i in records if i.startswith("ml-")], area
                    assert "Manningham" not in str(records), area
        finally:
            agent.close()
