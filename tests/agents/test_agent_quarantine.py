"""Quarantine per record: an invalid record never changes or deletes what the broker holds.

The hand-written OneRoster bundle (`bundles/leeds_1_1`) and a CSV folder go up whole, then
one record turns bad the way real exports do (a US-order date, an unknown grade, a row
with a value too many, a gender the catalogue refuses).  The broker (in memory, behind
MockTransport) must keep that record as it was, take every other change, and the agent
must report the record by id, field and kind of problem, never the value.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from agents.diff import compute, record_hash
from agents.mis.base import MisAdapter
from agents.mis.csv_adapter import CsvMis
from agents.mis.oneroster import OneRosterMis
from agents.quarantine import InvalidLimit, holds_area
from agents.runner import Agent
from agents.telemetry import collect
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config

BUNDLE = Path(__file__).parent / "bundles" / "leeds_1_1"
AREA = "students.basic"


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def start(tmp_path: Path, adapter: MisAdapter, area: str = AREA) -> tuple[Agent, FakeBroker, Clock]:
    broker, clock = FakeBroker(), Clock()
    agent = make_agent(make_config(tmp_path), adapter, broker, clock)
    assert agent.extract(area, full=True).ok
    assert agent.flush().clean
    clock.advance(60)
    return agent, broker, clock


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return Path(shutil.copytree(BUNDLE, tmp_path / "export"))


@pytest.mark.parametrize("full", [True, False])
def test_a_pupil_with_a_us_order_birth_date_is_kept_as_it_was_and_the_rest_goes_up(
    tmp_path: Path, export: Path, full: bool
) -> None:
    agent, broker, _ = start(tmp_path, OneRosterMis(export))
    before = dict(broker.areas[AREA])
    assert len(before) == 8
    replace_in(export / "demographics.csv", "stu-03,active,,2013-05-02", "stu-03,active,,5/22/2013")
    replace_in(export / "users.csv", "Aisha,Ahmed", "Aisha,Ahmed-Khan")

    result = agent.extract(AREA, full=full)
    assert result.ok
    assert agent.flush().clean

    held = broker.areas[AREA]
    assert held["stu-03"] == before["stu-03"]  # neither changed nor deleted
    assert held["stu-01"]["surname"] == "Ahmed-Khan"  # the rest of the area went through
    assert set(held) == set(before)
    # A full with a quarantined id is never a real full: that would delete it.
    assert all(u["mode"] == "delta" for u in broker.uploads[1:])
    assert all("stu-03" not in u["deleted"] for u in broker.uploads)
    [q] = result.quarantined
    assert (q.record_id, q.field) == ("stu-03", "date_of_birth")
    assert "month-first" in q.problem

    reported = collect(agent.state, mis="oneroster", errors=agent.errors, now=agent_now(agent))
    assert reported["quarantined"]["counts"] == {AREA: 1}
    [shown] = reported["quarantined"]["records"]
    assert (shown["area"], shown["id"], shown["field"]) == (AREA, "stu-03", "date_of_birth")
    assert "5/22/2013" not in str(reported)
    assert any("stu-03" in e and "quarantined" in e for e in reported["errors"])


def agent_now(agent: Agent) -> Any:
    return agent.state.areas()[AREA].last_attempt_at


def test_once_the_record_is_valid_again_it_is_updated_and_leaves_quarantine(
    tmp_path: Path, export: Path
) -> None:
    agent, broker, clock = start(tmp_path, OneRosterMis(export))
    demographics = export / "demographics.csv"
    replace_in(demographics, "stu-03,active,,2013-05-02", "stu-03,active,,5/22/2013")
    assert agent.extract(AREA, full=True).ok
    assert agent.flush().clean
    clock.advance(60)
    replace_in(demographics, "stu-03,active,,5/22/2013", "stu-03,active,,22/05/2013")
    again = agent.extract(AREA, full=True)
    assert again.ok
    assert again.quarantined == ()
    assert agent.flush().clean
    assert broker.areas[AREA]["stu-03"]["date_of_birth"] == "2013-05-22"
    assert agent.state.quarantine() == []


def test_unknown_grade_and_a_broken_row_are_quarantined_and_never_deleted(
    tmp_path: Path, export: Path
) -> None:
    agent, broker, _ = start(tmp_path, OneRosterMis(export))
    before = dict(broker.areas[AREA])
    users = export / "users.csv"
    replace_in(users, "par-05,08,", "par-05,UG,")  # stu-05: ungraded
    replace_in(users, "par-06,08,", "par-06,08,,surplus")  # stu-06: one value too many
    result = agent.extract(AREA, full=True)
    assert result.ok
    assert agent.flush().clean
    assert broker.areas[AREA] == before
    assert {(q.record_id, q.field) for q in result.quarantined} == {
        ("stu-05", "year_group"),
        ("stu-06", ""),
    }
    assert "surplus" not in str([q.as_json() for q in result.quarantined])


@pytest.mark.parametrize("full", [True, False])
def test_a_year_group_is_not_deleted_when_its_only_pupil_cannot_be_placed(
    tmp_path: Path, export: Path, full: bool
) -> None:
    users = export / "users.csv"
    for pupil in ("par-06,08,", "par-07,08,", "par-08,08,"):  # Year 8 is stu-05 alone ...
        replace_in(users, pupil, pupil.replace("08", "07"))
    agent, broker, _ = start(tmp_path, OneRosterMis(export), "groups")
    before = dict(broker.areas["groups"])
    assert "year-8" in before
    replace_in(users, "par-05,08,", "par-05,UG,")  # ... until an export loses her grade
    result = agent.extract("groups", full=full)
    assert result.ok
    assert result.deleted == 0
    assert agent.flush().clean
    assert broker.areas["groups"].keys() == before.keys()  # Year 8 is still there


def test_an_area_with_too_many_invalid_records_is_held_whole(tmp_path: Path, export: Path) -> None:
    agent, broker, _ = start(tmp_path, OneRosterMis(export))
    sent = len(broker.uploads)
    demographics = export / "demographics.csv"
    text = demographics.read_text(encoding="utf-8")
    # Six of eight pupils (75%, and more than 5) with a date that is no date.
    text = re.sub(r"^(stu-0[1-6],active,,)(\d{4})-", r"\1\2/", text, flags=re.MULTILINE)
    demographics.write_text(text, encoding="utf-8")
    result = agent.extract(AREA, full=True)
    assert not result.ok
    assert "held whole: 6 of 8 records are invalid" in str(result.error)
    assert len(result.quarantined) == 6
    assert agent.state.pending() == []
    assert agent.flush().clean
    assert len(broker.uploads) == sent
    assert agent.state.quarantine_counts() == {AREA: 6}


def test_the_invalid_share_is_configurable(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        mis={"adapter": "synthetic", "max_invalid_share": 0.5, "max_invalid_count": 0},
    )
    assert config.mis.invalid_limit == InvalidLimit(0.5, 0)
    assert config.mis.options == {}
    assert holds_area(InvalidLimit(), valid=40, invalid=6)
    assert not holds_area(InvalidLimit(), valid=95, invalid=5)  # five is not more than five
    assert not holds_area(InvalidLimit(), valid=100, invalid=6)  # under 10%


def test_a_csv_record_the_catalogue_refuses_is_kept_by_a_full_upload(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    path = folder / "students.basic.csv"
    rows = [f"s{n},Pupil{n},F" for n in range(10)]
    path.write_text("id,forename,gender\n" + "\n".join(rows) + "\n", encoding="utf-8")
    agent, broker, _ = start(tmp_path, CsvMis(folder))
    before = dict(broker.areas[AREA])
    path.write_text(
        path.read_text(encoding="utf-8")
        .replace("s4,Pupil4,F", "s4,Pupil4,Q")
        .replace("s5,Pupil5,F", "s5,Pupil5 Jr,F"),
        encoding="utf-8",
    )
    result = agent.extract(AREA, full=True)
    assert result.ok
    assert agent.flush().clean
    assert broker.areas[AREA]["s4"] == before["s4"]
    assert broker.areas[AREA]["s5"]["forename"] == "Pupil5 Jr"
    assert [(q.record_id, q.field) for q in result.quarantined] == [("s4", "gender")]


def test_the_diff_carries_a_quarantined_id_over_and_never_deletes_it() -> None:
    a, b = {"id": "a", "forename": "A"}, {"id": "b", "forename": "B"}
    stored = {"a": record_hash(a), "b": record_hash(b)}
    full = compute([a], stored, full=True, keep={"b", "new"})
    assert full.hashes == stored  # b's hash carried over as unchanged
    assert full.kept == {"b", "new"}
    delta = compute([a], stored, full=False, keep={"b"})
    assert delta.deleted == []
    assert delta.upserts == []
    assert compute([a], stored, full=False).deleted == ["b"]
