"""The operator CLI: outputs, bad input (one line, exit 2) and nothing half-created."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest
from sqlmodel import select

from broker.agenthub.auth import AgentPrincipal
from broker.agenthub.ingest import ingest
from broker.cache_wiring import build_cache_service
from broker.cli.main import run
from broker.db import session_scope
from broker.resources import Resources
from broker.schools.models import Agent
from broker.settings import load_settings
from consent.areas import AREAS
from tests.support.servers import free_port

WEAK_PASSWORDS = ["short1!", "alllowercase1!", "ALLUPPERCASE1!", "NoDigitsHere!", "NoSpecial123"]


class Cli:
    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            run(["--data-dir", str(self.data_dir), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return orjson.loads(out)

    def fails(self, *args: str, code: int = 2) -> str:
        actual, out, err = self(*args)
        assert actual == code, (out, err)
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("misbroker: error: ")
        return lines[0]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "data", capsys)


def add_school(cli: Cli, dfe: str = "3024012") -> dict[str, str]:
    result: dict[str, str] = cli.json(
        "school", "add", "--name", "Hilltop Academy", "--dfe-number", dfe, "--urn", "137000"
    )
    return result


def test_school_add_prints_id_and_agent_key(cli: Cli) -> None:
    created = add_school(cli)
    assert set(created) == {"school_id", "agent_key"}
    assert created["school_id"].startswith("sch_")
    assert len(created["agent_key"]) > 40
    listed = cli.json("school", "list")["schools"]
    assert [s["school_id"] for s in listed] == [created["school_id"]]
    assert listed[0]["dfe_number"] == "3024012"


def test_agent_key_is_not_stored_in_clear(cli: Cli) -> None:
    key = add_school(cli)["agent_key"]
    assert key.encode() not in (cli.data_dir / "misbroker.db").read_bytes()


def test_duplicate_dfe_number_is_refused_and_creates_nothing(cli: Cli) -> None:
    first = add_school(cli)
    line = cli.fails("school", "add", "--name", "Copy", "--dfe-number", "3024012")
    assert "3024012" in line
    assert first["school_id"] in line
    assert len(cli.json("school", "list")["schools"]) == 1


@pytest.mark.parametrize("dfe", ["123", "30240123", "abc4012", "0004012", "9994012"])
def test_malformed_dfe_number_is_refused(cli: Cli, dfe: str) -> None:
    assert "DfE number" in cli.fails("school", "add", "--name", "X", "--dfe-number", dfe)
    assert cli.json("school", "list")["schools"] == []


def test_unknown_option_is_one_line_exit_2(cli: Cli) -> None:
    assert "--colour" in cli.fails("school", "add", "--colour", "red")


def test_missing_option_is_one_line_exit_2(cli: Cli) -> None:
    assert "--dfe-number" in cli.fails("school", "add", "--name", "X")


def test_unreachable_redis_refuses_before_creating_anything(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISBROKER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    line = cli.fails("school", "add", "--name", "X", "--dfe-number", "3024012")
    assert "unreachable" in line
    monkeypatch.delenv("MISBROKER_REDIS_URL")
    assert cli.json("school", "list")["schools"] == []


def test_admin_add_returns_a_working_totp_secret(cli: Cli) -> None:
    school_id = add_school(cli)["school_id"]
    out = cli.json(
        "school",
        "admin-add",
        school_id,
        "--email",
        "Head@Hilltop.sch.uk",
        "--password",
        "Tr1cky!pass",
    )
    assert out["otpauth_uri"].startswith("otpauth://totp/")
    assert "head%40hilltop.sch.uk" in out["otpauth_uri"]
    totp = pyotp.TOTP(out["totp_secret"])
    assert totp.verify(totp.now())
    stored = (cli.data_dir / "misbroker.db").read_bytes()
    assert out["totp_secret"].encode() not in stored
    assert b"Tr1cky!pass" not in stored


@pytest.mark.parametrize("password", WEAK_PASSWORDS)
def test_weak_password_is_refused_and_creates_nothing(cli: Cli, password: str) -> None:
    school_id = add_school(cli)["school_id"]
    line = cli.fails(
        "school", "admin-add", school_id, "--email", "a@b.sch.uk", "--password", password
    )
    assert "password too weak" in line
    ok = cli.json(
        "school", "admin-add", school_id, "--email", "a@b.sch.uk", "--password", "G00d!enough"
    )
    assert ok["totp_secret"]  # the email was not taken by the refused attempt


def test_admin_add_refuses_unknown_school_and_duplicate_email(cli: Cli) -> None:
    assert "no school" in cli.fails(
        "school", "admin-add", "sch_nope", "--email", "a@b.sch.uk", "--password", "G00d!enough"
    )
    school_id = add_school(cli)["school_id"]
    args = ("school", "admin-add", school_id, "--email", "a@b.sch.uk", "--password", "G00d!enough")
    cli.json(*args)
    assert "already exists" in cli.fails(*args)


def test_partner_add_prints_credentials_and_keeps_reasons(cli: Cli) -> None:
    out = cli.json(
        "partner",
        "add",
        "--name",
        "ExamPro",
        "--areas",
        "students.basic,students.demographics",
        "--reason",
        'students.demographics="Pupil premium reporting"',
        "--webhook-url",
        "https://exampro.example/hooks",
    )
    assert set(out) == {"partner_id", "client_id", "client_secret", "webhook_secret"}
    assert out["webhook_secret"].startswith("whsec_")
    listed = cli.json("partner", "list")["partners"]
    assert listed[0]["requested_areas"] == [
        {"area": "students.basic", "reason": None},
        {"area": "students.demographics", "reason": "Pupil premium reporting"},
    ]
    stored = (cli.data_dir / "misbroker.db").read_bytes()
    assert out["client_secret"].encode() not in stored
    assert out["webhook_secret"].encode() not in stored


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--areas", "students.basic,students.shoe_size"], "students.shoe_size"),
        (["--areas", ""], "at least one area"),
        (["--areas", "students.sen"], "need a reason"),
        (["--areas", "students.basic", "--reason", "groups=why"], "not requested"),
        (["--areas", "students.basic", "--reason", "no-equals-sign"], "AREA="),
        (["--areas", "students.basic", "--webhook-url", "http://example.com/h"], "https"),
        (["--areas", "students.basic", "--webhook-url", "ftp://x"], "invalid webhook URL"),
        (["--areas", "students.basic", "--webhook-url", "https://169.254.169.254/x"], "metadata"),
        (["--areas", "students.basic", "--webhook-url", "http://localhost:6379/"], "private"),
    ],
)
def test_partner_add_bad_input(cli: Cli, args: list[str], expected: str) -> None:
    assert expected in cli.fails("partner", "add", "--name", "P", *args)
    assert cli.json("partner", "list")["partners"] == []


def test_partner_names_are_unique(cli: Cli) -> None:
    cli.json("partner", "add", "--name", "P", "--areas", "groups")
    assert "already exists" in cli.fails("partner", "add", "--name", "P", "--areas", "groups")


def test_school_close_sets_the_shred_date_once(cli: Cli) -> None:
    school_id = add_school(cli)["school_id"]
    closed = cli.json("school", "close", school_id)
    assert closed["status"] == "closed"
    assert closed["shred_after"] > closed["closed_at"]
    assert "already closed" in cli.fails("school", "close", school_id)
    assert "no school" in cli.fails("school", "close", "sch_missing")
    assert "closed" in cli.fails(
        "school", "admin-add", school_id, "--email", "a@b.sch.uk", "--password", "G00d!enough"
    )


def test_areas_json_is_the_catalogue(cli: Cli) -> None:
    out = cli.json("areas")
    assert [a["area"] for a in out["areas"]] == [a.name for a in AREAS]
    basic = next(a for a in out["areas"] if a["area"] == "students.basic")
    assert {"name": "upn", "type": "string"}.items() <= basic["fields"][0].items()
    code, text, _ = cli("areas")
    assert code == 0
    assert "students.photos" in text


def test_db_upgrade_reports_head(cli: Cli) -> None:
    assert cli.json("db", "upgrade")["revision"] == cli.json("db", "current")["head"]
    assert cli.json("db", "current")["up_to_date"] is True


def test_db_upgrade_migrates_a_fresh_production_database(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new deployment's first step (compose's `migrate`, the Kubernetes Job)."""
    monkeypatch.setenv("MISBROKER_ENVIRONMENT", "production")
    monkeypatch.setenv("MISBROKER_KEK", base64.b64encode(secrets.token_bytes(32)).decode())
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        monkeypatch.setenv(f"MISBROKER_{name}", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("MISBROKER_DATABASE_URL", f"sqlite:///{cli.data_dir / 'fresh.db'}")
    assert cli.json("db", "upgrade")["revision"] == cli.json("db", "current")["head"]


def test_purge_dry_run_shows_what_would_go_and_changes_nothing(cli: Cli) -> None:
    created = add_school(cli)
    res = Resources.build(load_settings(cli.data_dir))
    with session_scope(res.engine) as session:
        agent = session.exec(select(Agent)).one()
    body = orjson.dumps(
        {
            "batch_id": "8d7c7e0e-3a4b-4c55-9a55-0f1e2d3c4b5a",
            "area": "groups",
            "mode": "full",
            "extracted_at": "2026-11-01T02:00:00Z",
            "records": [{"id": "grp-1", "name": "8B"}, {"id": "grp-2", "name": "8C"}],
        }
    )
    principal = AgentPrincipal(agent_id=agent.id, school_id=created["school_id"])
    ingest(
        res.engine, build_cache_service(res), principal, body, datetime(2026, 11, 1, 3, tzinfo=UTC)
    )
    res.close()
    # groups: valid 24 h, purged 30 days after that -> kept at 2026-12-02T02:00Z, gone after.
    kept = cli.json("purge", "--dry-run", "--as-of", "2026-12-02T02:00:00Z")
    assert kept["areas"] == 0
    gone = cli.json("purge", "--dry-run", "--as-of", "2026-12-02T02:00:01Z")
    assert gone["areas"] == 1
    assert gone["items"][0]["area"] == "groups"
    assert gone["items"][0]["records"] == 2
    assert gone["dry_run"] is True
    again = cli.json("purge", "--dry-run", "--as-of", "2026-12-02T02:00:01Z")
    assert again["areas"] == 1  # a dry run deleted nothing
    assert "RFC 3339" in cli.fails("purge", "--dry-run", "--as-of", "tomorrow")
    assert "--dry-run" in cli.fails("purge", "--as-of", "2026-12-02T02:00:01Z")
