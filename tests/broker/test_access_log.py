"""The access log as schools and operators see it: admin API (JSON, CSV) and `audit verify`."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from broker.cli.main import run
from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.resources import Resources
from broker.settings import load_settings
from consent.access_log import LogEntry, append_entries
from consent.audit_keys import AuditKeyring
from consent.models import AuditEvent
from tests.support.admin import BASIC, CONTACTS, World, build_world, cheap_argon2, log_read

S = timedelta(seconds=1)


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    return build_world(client, clock)


def test_the_school_reads_its_own_log_newest_first_with_filters(world: World) -> None:
    start = world.now()
    for n in range(5):
        log_read(world, n, partner_id=world.other_partner_id if n == 3 else world.partner_id)
        world.clock.advance(S)
    log_read(world, 99, school_id=world.other_admin.school_id)
    body = world.call("GET", "/access-log").json()
    assert [e["record_count"] for e in body["data"]] == [4, 3, 2, 1, 0]
    first = body["data"][-1]
    assert first["at"] == rfc3339(start)
    assert first["areas"] == [BASIC]
    assert first["decision"] == "allowed"
    assert len(first["hash"]) == 64
    params = {"since": rfc3339(start + S), "until": rfc3339(start + 4 * S)}
    assert [e["seq"] for e in world.call("GET", "/access-log", params=params).json()["data"]] == [
        4,
        3,
        2,
    ]
    params["partner_id"] = world.partner_id
    assert len(world.call("GET", "/access-log", params=params).json()["data"]) == 2
    page = world.call("GET", "/access-log", params={"limit": 2}).json()
    assert [e["seq"] for e in page["data"]] == [5, 4]
    more = world.call(
        "GET", "/access-log", params={"limit": 2, "cursor": page["meta"]["next_cursor"]}
    ).json()
    assert [e["seq"] for e in more["data"]] == [3, 2]
    other = world.call("GET", "/access-log", admin=world.other_admin).json()["data"]
    assert [e["record_count"] for e in other] == [99]


def test_the_log_filters_by_area_and_outcome_in_json_and_csv(world: World) -> None:
    log_read(world, 1, areas=(BASIC, CONTACTS))
    log_read(world, 2, areas=(CONTACTS,), decision="denied", reason="not_granted")
    log_read(world, 3)
    log_read(world, 4, areas=(CONTACTS,), school_id=world.other_admin.school_id)

    def counts(**params: str) -> list[int]:
        body = world.call("GET", "/access-log", params=params).json()
        return [e["record_count"] for e in body["data"]]

    assert counts(area=CONTACTS) == [2, 1]
    assert counts(area=BASIC) == [3, 1]
    assert counts(outcome="denied") == [2]
    assert counts(outcome="allowed") == [3, 1]
    assert counts(area=CONTACTS, outcome="allowed") == [1]
    assert counts(area=BASIC, outcome="denied") == []
    csv_text = world.call(
        "GET",
        "/access-log",
        params={"area": CONTACTS, "outcome": "allowed"},
        headers={"Accept": "text/csv"},
    ).text
    assert [r["record_count"] for r in csv.DictReader(io.StringIO(csv_text))] == ["1"]


def test_an_unknown_area_or_outcome_is_422(world: World) -> None:
    response = world.call("GET", "/access-log", params={"area": "students.%"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["unknown_areas"] == ["students.%"]
    assert world.call("GET", "/access-log", params={"outcome": "maybe"}).status_code == 422
    # The console says "refused"; the rows say "denied": both mean the same filter.
    refused = world.call("GET", "/access-log", params={"outcome": "refused"})
    denied = world.call("GET", "/access-log", params={"outcome": "denied"})
    assert refused.status_code == 200
    assert refused.json()["data"] == denied.json()["data"]


def test_naive_times_and_bad_cursors_are_422(world: World) -> None:
    assert (
        world.call("GET", "/access-log", params={"since": "2026-11-23T09:00:00"}).status_code == 422
    )
    assert world.call("GET", "/access-log", params={"cursor": "x"}).status_code == 422


def test_the_log_exports_as_csv(world: World) -> None:
    log_read(world, 1, request_id="-1+1", areas=(BASIC, CONTACTS))
    world.clock.advance(S)
    log_read(world, 2, reason="in_grace", fields=("upn", "surname"))
    response = world.call("GET", "/access-log", headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="access-log-{world.school_id}-2026-11-23.csv"'
    )
    assert response.text.count("\r\n") == 3
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["seq"] for r in rows] == ["2", "1"]
    assert rows[1]["request_id"] == "'-1+1"  # a formula-looking cell is defused
    assert rows[1]["areas"] == f"{CONTACTS};{BASIC}"
    assert rows[0]["reason"] == "in_grace"
    assert list(rows[0])[-2:] == ["operation", "fields"]  # appended: positions kept
    assert [r["operation"] for r in rows] == ["read", "read"]
    assert rows[0]["fields"] == "upn;surname"
    assert rows[1]["fields"] == "*"  # not narrowed: every field of its areas


# ---------------------------------------------------------------------------------------
# Operators: `misbroker audit verify` and the refused `misbroker consent ...`


def cli(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        run(["--data-dir", str(data_dir), *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A school with eight access-log entries, written as the API would write them."""
    data_dir = tmp_path / "data"
    code, out, err = cli(
        data_dir, capsys, "school", "add", "--name", "Hilltop", "--dfe-number", "3024012", "--json"
    )
    assert code == 0, err
    school_id = orjson.loads(out)["school_id"]
    resources = Resources.build(load_settings(data_dir))
    clock = FrozenClock(resources.clock.now())
    keyring = AuditKeyring(lambda: session_scope(resources.engine), resources.sealer, clock.now)
    entries = [
        LogEntry(
            school_id=school_id,
            partner_id="prt_1",
            areas=(BASIC,),
            record_count=n,
            decision="allowed",
            reason="granted",
            request_id=f"req-{n}",
            at=clock.advance(S),
        )
        for n in range(1, 9)
    ]
    with session_scope(resources.engine) as session:
        append_entries(session, entries, keyring.key_for)
    resources.close()
    return data_dir, school_id


def tamper(data_dir: Path, *statements: str) -> None:
    with sqlite3.connect(data_dir / "misbroker.db") as conn:
        for statement in statements:
            conn.execute(statement)


def test_an_intact_log_verifies(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, school_id = logged
    assert cli(data_dir, capsys, "audit", "verify", school_id) == (
        0,
        "chain intact: 8 entries\n",
        "",
    )
    code, out, _ = cli(data_dir, capsys, "audit", "verify", school_id, "--json")
    assert code == 0
    assert orjson.loads(out) == {
        "school_id": school_id,
        "entries": 8,
        "head_seq": 8,
        "intact": True,
        "breaks": [],
    }


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        (["UPDATE access_log SET record_count = 7000 WHERE seq = 3"], ["seq 3: altered"]),
        (["UPDATE access_log SET reason = 'in_grace' WHERE seq = 6"], ["seq 6: altered"]),
        (["UPDATE access_log SET hash = zeroblob(32) WHERE seq = 4"], ["seq 4: altered"]),
        (["DELETE FROM access_log WHERE seq = 4"], ["seq 4: gap"]),
        (
            [
                "UPDATE access_log SET seq = -2 WHERE seq = 2",
                "UPDATE access_log SET seq = 2 WHERE seq = 5",
                "UPDATE access_log SET seq = 5 WHERE seq = -2",
            ],
            ["seq 2: altered", "seq 5: altered"],
        ),
        (["DELETE FROM access_log WHERE seq >= 7"], ["seq 7: truncated"]),
        (["DELETE FROM access_log_heads"], ["seq 8: head_mismatch"]),
    ],
    ids=["record_count", "reason", "hash", "removed", "swapped", "truncated", "head removed"],
)
def test_tampering_is_named_by_audit_verify(
    logged: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    statements: list[str],
    named: list[str],
) -> None:
    data_dir, school_id = logged
    tamper(data_dir, *statements)
    code, out, _ = cli(data_dir, capsys, "audit", "verify", school_id)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("chain broken")
    for line in named:
        assert line in lines[1:], out


def test_audit_verify_of_an_unknown_school_is_one_line_exit_2(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(logged[0], capsys, "audit", "verify", "sch_nope")
    assert (code, out) == (2, "")
    assert err.startswith("misbroker: error: no school")


@pytest.mark.parametrize("verb", ["grant", "revoke"])
def test_operators_can_never_grant_or_revoke_and_the_attempt_is_recorded(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    data_dir, school_id = logged
    code, out, err = cli(data_dir, capsys, "consent", verb, school_id, "prt_1", "--areas", BASIC)
    assert (code, out) == (2, "")
    assert err == f"misbroker: error: only a school admin can {verb} consent (use the admin API)\n"
    resources = Resources.build(load_settings(data_dir))
    with Session(resources.engine) as session:
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
    resources.close()
    assert [(r.action, r.detail["outcome"], r.detail["via"]) for r in rows] == [
        (f"consent.{verb}", "refused", "cli")
    ]
    assert rows[0].actor.startswith("operator:")
    assert rows[0].detail["args"] == [school_id, "prt_1", "--areas", BASIC]
