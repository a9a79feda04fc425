"""`misbroker partner add --request FILE` and `partner update-request`: field-by-field
requests in JSON or TOML, versioned; bad files are one line and exit 2, changing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from broker.db import make_engine
from broker.partners.models import PartnerRequestVersion
from broker.partners.requests import RequestVersions
from tests.broker.test_cli import Cli

REQUEST = {
    "areas": {
        "students.basic": {
            "reason": "Exam entries",
            "fields": {
                "upn": {"required": True, "reason": "Match candidates"},
                "house": {"required": False, "reason": "House points"},
            },
        }
    }
}
TOML = """
[areas."students.basic"]
reason = "Exam entries"
[areas."students.basic".fields.upn]
required = true
reason = "Match candidates"
[areas."students.basic".fields.exam_number]
required = false
reason = "Seating"
"""


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "data", capsys)


def versions(cli: Cli, partner_id: str) -> list[int]:
    engine = make_engine(f"sqlite:///{cli.data_dir / 'misbroker.db'}")
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(PartnerRequestVersion).where(PartnerRequestVersion.partner_id == partner_id)
            ).all()
            current = RequestVersions(session).current(partner_id)
            assert current.version == max(r.version for r in rows)
            return sorted(r.version for r in rows)
    finally:
        engine.dispose()


def test_a_request_file_in_json_then_a_new_version_in_toml(cli: Cli, tmp_path: Path) -> None:
    first = tmp_path / "request.json"
    first.write_text(json.dumps(REQUEST))
    added = cli.json("partner", "add", "--name", "ExamPro", "--request", str(first))
    partner_id = added["partner_id"]
    listed = cli.json("partner", "list")["partners"][0]
    assert [a["area"] for a in listed["requested_areas"]] == ["students.basic"]
    second = tmp_path / "request.toml"
    second.write_text(TOML)
    updated = cli.json("partner", "update-request", partner_id, "--request", str(second))
    assert updated == {"partner_id": partner_id, "request_version": 2}
    assert versions(cli, partner_id) == [1, 2]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{not json", "neither JSON nor TOML"),
        (json.dumps({"areas": {}}), "at least one area"),
        (json.dumps({"areas": {"students.shoe_size": {}}}), "unknown data area"),
        (json.dumps({"areas": {"students.basic": {"fields": {"shoe": {}}}}}), "no field 'shoe'"),
        (
            json.dumps({"areas": {"students.sen": {"fields": {"sen_status": {}}}}}),
            "needs a reason",
        ),
        (
            json.dumps({"areas": {"students.basic": {"fields": {"upn": {"required": "yes"}}}}}),
            "true or false",
        ),
    ],
)
def test_a_bad_request_file_is_one_line_and_changes_nothing(
    cli: Cli, tmp_path: Path, body: str, expected: str
) -> None:
    path = tmp_path / "request.json"
    path.write_text(body)
    assert expected in cli.fails("partner", "add", "--name", "P", "--request", str(path))
    assert cli.json("partner", "list")["partners"] == []
    good = tmp_path / "good.json"
    good.write_text(json.dumps(REQUEST))
    partner_id = cli.json("partner", "add", "--name", "P", "--request", str(good))["partner_id"]
    assert expected in cli.fails("partner", "update-request", partner_id, "--request", str(path))
    assert versions(cli, partner_id) == [1]


def test_areas_or_request_exactly_one(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    assert "exactly one" in cli.fails("partner", "add", "--name", "P")
    both = ("--areas", "groups", "--request", str(path))
    assert "exactly one" in cli.fails("partner", "add", "--name", "P", *both)
    assert "no partner" in cli.fails(
        "partner", "update-request", "prt_missing", "--request", str(path)
    )
    assert "cannot read" in cli.fails(
        "partner", "update-request", "prt_missing", "--request", str(tmp_path / "nope.json")
    )
