"""Property: whatever sequence of good and broken exports the agent reads, the broker
never loses a record the last good export held (less what it really deleted) and never
holds a record of another school.

The two-school trust export (`bundles/bradford_two_schools_1_1`, school `hpp` chosen) is
re-written before each step: a good export may drop pupils who left; a broken one is a
header-only or missing users file, a US-order date, a row with a value too many, or an
old demographics header.  The broker is the in-memory fake (MockTransport): the property
is about what the agent sends, and every step is driven by state, never by time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.mis.oneroster import OneRosterMis, Options
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config

BUNDLE = Path(__file__).parent / "bundles" / "bradford_two_schools_1_1"
PUPILS = ("hp-s1", "hp-s2", "hp-s3")
AREAS = ("students.basic", "students.contact_details", "groups", "contacts", "staff.basic")
BREAKS = ("header_only", "no_users", "us_date", "extra_value", "old_demographics", "ungraded")

Step = tuple[str, frozenset[str], bool]  # (break or "good", pupils who left, full?)
steps = st.lists(
    st.tuples(
        st.sampled_from(("good", *BREAKS)),
        st.frozensets(st.sampled_from(PUPILS), max_size=2),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


def write_export(folder: Path, kind: str, left: frozenset[str]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(BUNDLE, folder)
    users, demographics = folder / "Users.csv", folder / "Demographics.csv"
    lines = users.read_text(encoding="utf-8").splitlines()
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


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps)
def test_the_broker_never_loses_a_good_exports_records_nor_takes_another_schools(
    sequence: list[Step],
) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        export = root / "export"
        write_export(export, "good", frozenset())
        broker, clock = FakeBroker(), Clock()
        agent = make_agent(
            make_config(root), OneRosterMis(export, Options(school="hpp")), broker, clock
        )
        try:
            for area in AREAS:
                assert agent.extract(area, full=True).ok
            assert agent.flush().clean
            expected = set(PUPILS)  # what the last good export holds, as the broker has it
            for kind, left, full in sequence:
                clock.advance(60)
                write_export(export, kind, left)
                results = [agent.extract(area, full=full) for area in AREAS]
                assert agent.flush().clean
                held = set(broker.areas["students.basic"])
                if kind == "good":
                    assert all(r.ok for r in results)  # a pupil or two leaving is not held
                    expected = set(PUPILS) - left
                    assert held == expected  # its deletions really happened, nothing else
                assert held >= expected
                for area, records in broker.areas.items():
                    assert not [i for i in records if i.startswith("ml-")], area
                    assert "Manningham" not in str(records), area
        finally:
            agent.close()
