"""A live broker for the console's browser tests, and the people and partners it serves.

Schools, admins and partners are created with the operator CLI, as an operator would; a
school's data arrives over the agent API; a partner reads over the partner API.  The
broker's clock is a file (`MISBROKER_CLOCK=file:PATH`): it stands still until a test moves
it, so idle timeouts, grace windows and TOTP steps are exact, and nothing waits on a timer.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp

from agents.mis.synthetic import SyntheticMis
from broker.clock import rfc3339
from tests.agents.agent_broker import ROOT, LiveBroker, broker_env

PASSWORD = "Corr3ct!horse"
BASIC, CONTACTS, DEMOGRAPHICS = "students.basic", "contacts", "students.demographics"
REQUESTED = (BASIC, CONTACTS, DEMOGRAPHICS)
REASONS = {
    BASIC: "Candidate names, UPNs and exam numbers",
    CONTACTS: "Tell parents about the exam timetable",
    DEMOGRAPHICS: "Pupil premium",
}
SCHOOL_NAMES = (
    "Northfield Academy",
    "Riverside High School",
    "St Aidan's C of E School",
    "Oakwood Community College",
    "Hillcrest School",
    "Meadowbank Academy",
)
PARTNER_NAMES = ("ExamPro", "ClassText", "HomeworkHive", "SafeHands", "MathsLab", "LibraryLink")
TOTP_STEP = 30


class BrokerClock:
    """The broker's "now", held in a file every broker process re-reads when it changes."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.path = path
        self._at = start
        self._write()

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> datetime:
        if at < self._at:
            raise ValueError("the broker's clock only moves forward (TOTP steps, audit order)")
        self._at = at
        self._write()
        return at

    def advance(self, delta: timedelta) -> datetime:
        return self.set(self._at + delta)

    def _write(self) -> None:
        before = self.path.stat().st_mtime_ns if self.path.exists() else 0
        self.path.write_text(rfc3339(self._at) + "\n")
        # FileClock re-reads only when the mtime changes: make sure it does, even on a
        # filesystem with a coarse timestamp.
        mtime = max(before + 1, time.time_ns())
        os.utime(self.path, ns=(mtime, mtime))


@dataclass
class Admin:
    school_id: str
    email: str
    totp_secret: str
    last_step: int = -1  # the broker refuses a code of a step at or before the last one used


@dataclass
class Tenant:
    """A school with one admin (TOTP not enrolled yet), and a partner asking for its data."""

    school_id: str
    school_name: str
    agent_key: str
    admin: Admin
    partner_id: str
    partner_name: str
    client_id: str
    client_secret: str


@dataclass
class Console:
    broker: LiveBroker
    clock: BrokerClock
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.broker.url

    def cli(self, *args: str) -> dict[str, Any]:
        """One operator CLI command with --json; its answer."""
        env = broker_env(self.broker.data_dir, self.broker.redis_url, self.broker.env)
        done = subprocess.run(
            [sys.executable, "-m", "broker.cli.main", "--data-dir", str(self.broker.data_dir),
             *args, "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"misbroker {' '.join(args)}: {done.stderr}"
        answer = orjson.loads(done.stdout)
        assert isinstance(answer, dict)
        return answer

    def tenant(self, *, requested: tuple[str, ...] = REQUESTED) -> Tenant:
        n = next(self._serial)
        suffix = "" if n < len(SCHOOL_NAMES) else f" {n}"
        school_name = SCHOOL_NAMES[n % len(SCHOOL_NAMES)] + suffix
        partner_name = PARTNER_NAMES[n % len(PARTNER_NAMES)] + suffix
        school = self.cli(
            "school", "add", "--name", school_name, "--dfe-number", f"302{4012 + n:04d}"
        )
        school_id = str(school["school_id"])
        admin = self.add_admin(school_id, f"business.manager{n}@school{n}.example")
        reasons = [f"--reason={area}={REASONS[area]}" for area in requested if area in REASONS]
        partner = self.cli(
            "partner", "add", "--name", partner_name, "--areas", ",".join(requested), *reasons
        )
        return Tenant(
            school_id=school_id,
            school_name=school_name,
            agent_key=str(school["agent_key"]),
            admin=admin,
            partner_id=str(partner["partner_id"]),
            partner_name=partner_name,
            client_id=str(partner["client_id"]),
            client_secret=str(partner["client_secret"]),
        )

    def add_admin(self, school_id: str, email: str) -> Admin:
        out = self.cli("school", "admin-add", school_id, "--email", email, "--password", PASSWORD)
        return Admin(school_id=school_id, email=email, totp_secret=str(out["totp_secret"]))

    def code(self, admin: Admin, secret: str | None = None) -> str:
        """A TOTP code the broker accepts now: moves the clock to the next step if needed."""
        step = int(self.clock.now().timestamp()) // TOTP_STEP
        if step <= admin.last_step:
            step = admin.last_step + 1
            self.clock.set(datetime.fromtimestamp(step * TOTP_STEP, UTC))
        admin.last_step = step
        return str(pyotp.TOTP(secret or admin.totp_secret).at(step * TOTP_STEP))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def upload(self, tenant: Tenant, *areas: str, pupils: int = 12) -> None:
        """The school's agent sends these areas of a small synthetic school, in full."""
        mis = SyntheticMis(
            seed=10, pupils=pupils, phase="secondary", school_name=tenant.school_name,
            day=self.clock.now().date(),
        )  # fmt: skip
        with self.http() as client:
            for area in areas:
                body = {
                    "batch_id": str(uuid.uuid4()),
                    "area": area,
                    "mode": "full",
                    "extracted_at": rfc3339(self.clock.now()),
                    "records": list(mis.extract(area)),
                    "deleted": [],
                }
                response = client.post(
                    "/v1/agent/uploads",
                    content=orjson.dumps(body),
                    headers={
                        "Authorization": f"Bearer {tenant.agent_key}",
                        "Content-Type": "application/json",
                    },
                )
                assert response.status_code == 200, response.text

    def partner_read(self, tenant: Tenant, area: str) -> httpx.Response:
        """The partner reads one area of the school over the partner API."""
        with self.http() as client:
            token = client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(tenant.client_id, tenant.client_secret),
            )
            assert token.status_code == 200, token.text
            return client.get(
                f"/v1/schools/{tenant.school_id}/data/{area}",
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            )

    def admin_token(self, admin: Admin) -> str:
        """A bearer token from the admin API's login (the admin has enrolled TOTP)."""
        with self.http() as client:
            response = client.post(
                "/v1/admin/login",
                json={"email": admin.email, "password": PASSWORD, "totp": self.code(admin)},
            )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def admin_get(
        self, token: str, path: str, params: dict[str, str] | None = None, accept: str = ""
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if accept:
            headers["Accept"] = accept
        with self.http() as client:
            return client.get(path, params=params, headers=headers)


def start_of_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)
