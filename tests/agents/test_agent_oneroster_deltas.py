"""OneRoster delta bundles, after a bulk one, against the real broker (the app, in process).

Hand-written deltas (`bundles/leeds_1_1_delta`, `bundles/york_1_2_delta`) hold only
changed rows: a pupil renamed, a pupil deleted (`tobedeleted`), a pupil joining, their
demographics and enrollments.  A delta is applied to the agent's copy of the export and
sent as delta uploads: `tobedeleted` deletes, other rows upsert, absent rows are left as
they were.  Quarantine, school selection, live enrollments and the mass-deletion guard
work as for a bulk export, and a later bulk export diffs against the agent's hashes as
if the delta had been a bulk export.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.extract import Extraction
from agents.mis.base import AdapterError
from agents.mis.oneroster import OneRosterMis, Options
from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_fakes import make_config
from tests.agents.app_broker import AppBroker, app_broker

BUNDLES = Path(__file__).parent / "bundles"
AREAS = (
    "school.details",
    "students.basic",
    "students.contact_details",
    "staff.basic",
    "contacts",
    "groups",
    "students.demographics",
)


@pytest.fixture
def broker(tmp_path: Path, redis_url: str) -> Iterator[AppBroker]:
    with app_broker(tmp_path / "broker", redis_url) as running:
        yield running


class Scene:
    """One school's agent reading `export`, a folder the test rewrites between runs."""

    def __init__(self, root: Path, broker: AppBroker, school: str | None = None) -> None:
        self.broker = broker
        self.school_id, key = broker.add_school()
        self.export = root / "export"
        self.clock = broker.agent_clock()
        config = make_config(root, broker_url="http://127.0.0.1:9", agent_key=key)
        self.mis = OneRosterMis(
            self.export, Options(school=school), roster=config.state_dir / "oneroster"
        )
        self.agent = Agent(
            config,
            self.mis,
            AgentState.open(config.state_dir),
            clock=self.clock,
            sleep=self.clock.sleep,
            transport=broker.transport(),
        )

    def load(self, bundle: str | Path) -> None:
        shutil.rmtree(self.export, ignore_errors=True)
        shutil.copytree(BUNDLES / bundle, self.export)

    def run(self, *, full: bool = False, confirmed: bool = False) -> dict[str, Extraction]:
        self.clock.advance(60)
        areas = sorted(self.mis.areas())
        out = {a: self.agent.extract(a, full=full, confirmed=confirmed) for a in areas}
        assert self.agent.flush().clean
        return out

    def held(self, area: str) -> dict[str, dict[str, Any]]:
        return self.broker.records(self.school_id, area)


@pytest.fixture
def leeds(tmp_path: Path, broker: AppBroker) -> Iterator[Scene]:
    scene = Scene(tmp_path, broker)
    scene.load("leeds_1_1")
    assert all(r.ok for r in scene.run(full=True).values())
    try:
        yield scene
    finally:
        scene.agent.close()


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_a_1_1_delta_upserts_deletes_and_leaves_absent_rows_alone(leeds: Scene) -> None:
    before = leeds.held("students.basic")
    assert len(before) == 8
    leeds.load("leeds_1_1_delta")
    results = leeds.run(full=True)  # a full is asked for; a delta can only send deltas
    assert all(r.ok for r in results.values())
    basic = results["students.basic"]
    assert (basic.mode, basic.upserts, basic.deleted) == ("delta", 2, 1)
    assert results["school.details"].upserts == 0  # orgs.csv absent: unchanged

    now = leeds.held("students.basic")
    assert set(now) == set(before) - {"stu-08"} | {"stu-09"}
    assert now["stu-02"]["surname"] == "Brown-Lowe"
    # stu-02's demographics row is not in the delta: its birth date is kept, not emptied.
    assert now["stu-02"]["date_of_birth"] == "2012-10-30"
    assert now["stu-09"]["date_of_birth"] == "2012-02-03"  # UK day-first
    assert now["stu-09"]["registration_group"] == "8B"
    assert {k: v for k, v in now.items() if k not in ("stu-02", "stu-09")} == {
        k: v for k, v in before.items() if k not in ("stu-02", "stu-08")
    }
    groups = leeds.held("groups")
    assert groups["cls-8b"]["student_ids"] == ["stu-05", "stu-06", "stu-07", "stu-09"]
    assert "stu-08" not in leeds.held("students.demographics")

    # The same delta again (no new export yet) changes nothing.
    again = leeds.run()
    assert all(r.ok and r.upserts == 0 and r.deleted == 0 for r in again.values())


def test_a_later_bulk_export_diffs_against_what_the_delta_sent(leeds: Scene) -> None:
    original = leeds.held("students.basic")
    leeds.load("leeds_1_1_delta")
    leeds.run()
    leeds.load("leeds_1_1")  # the bulk export as it was: the delta's changes undone
    results = leeds.run()
    basic = results["students.basic"]
    assert (basic.mode, basic.upserts, basic.deleted) == ("delta", 2, 1)  # stu-02, stu-08; stu-09
    assert results["staff.basic"].upserts == 0
    assert leeds.held("students.basic") == original
    # A full after it sends the same area, and the next delta finds nothing to send.
    assert leeds.run(full=True)["students.basic"].mode == "full"
    assert all(r.upserts == 0 and r.deleted == 0 for r in leeds.run().values())


def test_a_row_older_than_the_agents_copy_is_not_applied(leeds: Scene) -> None:
    leeds.load("leeds_1_1_delta")
    leeds.run()
    replace_in(leeds.export / "users.csv", "Brown-Lowe", "Brown")
    replace_in(leeds.export / "users.csv", "2025-10-06T16:05:00Z", "2025-10-01T08:00:00Z")
    results = leeds.run()
    assert results["students.basic"].upserts == 0
    assert leeds.held("students.basic")["stu-02"]["surname"] == "Brown-Lowe"


def test_a_bad_row_in_a_delta_is_quarantined_and_the_broker_keeps_the_record(
    leeds: Scene,
) -> None:
    before = leeds.held("students.basic")
    leeds.load("leeds_1_1_delta")
    with (leeds.export / "demographics.csv").open("a", encoding="utf-8") as demographics:
        demographics.write(
            "stu-03,active,2025-10-06T16:05:00Z,2013-02-30,female,false,true,false,false,"
            "false,false,false,,,,\n"
        )
    results = leeds.run()
    basic = results["students.basic"]
    assert basic.ok
    assert [(q.record_id, q.field) for q in basic.quarantined] == [("stu-03", "date_of_birth")]
    now = leeds.held("students.basic")
    assert now["stu-03"] == before["stu-03"]
    assert now["stu-02"]["surname"] == "Brown-Lowe"  # the rest of the delta went through


def test_a_delta_deleting_too_much_is_held_until_confirmed(leeds: Scene) -> None:
    leeds.load("leeds_1_1_delta")
    users = leeds.export / "users.csv"
    lines = users.read_text(encoding="utf-8").splitlines()[:1]
    lines += [
        f"stu-0{n},tobedeleted,2025-10-06T16:05:00Z,true,org-1,student,,,,,,,,,,,07,"
        for n in range(1, 8)
    ]
    users.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = leeds.run()
    held = results["students.basic"].held
    assert held is not None
    assert (held.records, held.deleting) == (8, 7)  # stu-08's users row is not in the delta
    assert len(leeds.held("students.basic")) == 8  # nothing sent

    # The agent reports the hold; an operator confirms; the next heartbeat carries it out.
    leeds.agent.heartbeat()
    assert leeds.broker.confirm_deletion(leeds.school_id, "students.basic")["deleting"] == 7
    leeds.agent.heartbeat()
    assert leeds.agent.flush().clean
    assert set(leeds.held("students.basic")) == {"stu-08"}


def test_a_broken_delta_file_fails_only_its_areas(leeds: Scene) -> None:
    before = {area: leeds.held(area) for area in AREAS}
    leeds.load("leeds_1_1_delta")
    replace_in(leeds.export / "users.csv", "sourcedId,status", "userSourcedId,status")
    results = leeds.run()
    failed = {area for area, r in results.items() if not r.ok}
    assert failed == {
        "students.basic",
        "students.contact_details",
        "staff.basic",
        "contacts",
        "groups",
        "students.demographics",
    }
    assert results["school.details"].ok
    assert {area: leeds.held(area) for area in AREAS} == before


def test_a_delta_with_no_bulk_export_before_is_refused(tmp_path: Path, broker: AppBroker) -> None:
    scene = Scene(tmp_path, broker)
    try:
        scene.load("leeds_1_1_delta")
        assert scene.mis.areas() == frozenset()  # no orgs nor users: nothing to read
        with pytest.raises(AdapterError, match="export bulk files once, then deltas"):
            scene.mis.read("students.basic")
        assert not scene.agent.extract("students.basic").ok
        assert scene.held("students.basic") == {}
    finally:
        scene.agent.close()


def test_a_1_2_delta_with_roles(tmp_path: Path, broker: AppBroker) -> None:
    scene = Scene(tmp_path, broker)
    try:
        scene.load("york_1_2")
        scene.run(full=True)
        assert set(scene.held("students.basic")) == {"p1", "p2", "p5"}
        scene.load("york_1_2_delta")
        results = scene.run()
        assert all(r.ok for r in results.values())
        students = scene.held("students.basic")
        assert set(students) == {"p1", "p2", "p6"}
        assert students["p6"]["date_of_birth"] == "2010-07-21"
        assert students["p6"]["registration_group"] == "9Y"
        assert students["p2"]["preferred_name"] == "Ben"  # absent from the delta: as it was
        phones = scene.held("students.contact_details")["p1"]["phones"]
        assert [p["number"] for p in phones] == ["07700 900199"]
        groups = scene.held("groups")
        assert "p5" not in groups["c-sc2"]["student_ids"]
        assert "p6" in groups["c-9y"]["student_ids"]
        assert set(scene.held("staff.basic")) == {"t1", "t2"}
    finally:
        scene.agent.close()


def test_a_delta_of_a_two_school_export_takes_only_the_chosen_school(
    tmp_path: Path, broker: AppBroker
) -> None:
    scene = Scene(tmp_path, broker, school="hpp")
    try:
        scene.load("bradford_two_schools_1_1")
        scene.run(full=True)
        scene.load("bradford_two_schools_1_1")
        (scene.export / "Manifest.csv").write_text(
            "propertyName,value\noneroster.version,1.1\nfile.users,delta\nfile.orgs,absent\n"
            "file.classes,absent\nfile.enrollments,absent\nfile.demographics,absent\n",
            encoding="utf-8",
        )
        for name in ("Orgs.csv", "Classes.csv", "ENROLLMENTS.csv", "Demographics.csv"):
            (scene.export / name).unlink()
        header = (scene.export / "Users.csv").read_text(encoding="utf-8").splitlines()[0]
        (scene.export / "Users.csv").write_text(
            header + "\n"
            "ml-s3,active,2025-10-06,true,mlp,student,,,Zara,Ali,,,,,,,03,\n"
            "hp-s4,active,2025-10-06,true,hpp,student,,,Yusuf,Ali,,,,,,,02,\n",
            encoding="utf-8",
        )
        results = scene.run()
        assert results["students.basic"].upserts == 1
        assert set(scene.held("students.basic")) == {"hp-s1", "hp-s2", "hp-s3", "hp-s4"}
        for area in AREAS:
            assert "ml-" not in str(scene.held(area)), area
    finally:
        scene.agent.close()
