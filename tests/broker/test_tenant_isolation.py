"""Tenant isolation, property-based: no partner ever reads what it was not entitled to.

Data minimisation is part of the model: partners request fields one by one (one required,
one optional per area, and the fields that link rows to pupils); grants approve optional
fields or not, admins change approvals (a removed field stays served through the grace),
set audiences (year groups, pupils in, pupils out), restrict pupils, and pupils move
between year groups.  No response may hold a field not approved at that moment, a pupil
outside the partner's audience, or a row linked only to such a pupil.

Each example builds a fresh world inside the one app: 2-3 schools (each with its agent key,
an admin and data uploaded in five areas) and 2-3 partners asking for random areas.  Then a
random run: consents granted, narrowed, revoked, suspended and resumed by each school's
admin through the admin API; clock moves (onto revocation ends and grace ends too); delta
uploads; and partner reads of any school, any area, with or without a projection,
`updated_since`, small pages and foreign cursors.

Entitlement comes from this module's own model of the rules in DESIGN.md, never from the
consent engine.  Every value uploaded is a marker naming its world, school, area, field and
record, so a leak is a regular-expression match away.  At the end of each example every
school's admin API is checked: its access log holds exactly the reads of its own data (with
partner, area and record count), its consent list exactly its own consents.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin, register_school
from consent.areas import CATALOGUE
from tests.support.admin import PASSWORD, Admin, cheap_argon2

GRACE = timedelta(hours=72)  # the deployment default (DESIGN.md)
YEARS = ("Year 7", "Year 8")
# The fields that link a row to pupils: required wherever requested.
LINKS = {
    "students.basic": "year_group",
    "contacts": "student_ids",
    "groups": "student_ids",
    "behaviour": "student_id",
}
SUSPENSION_LIMIT = timedelta(days=30)
BASIC, CONTACTS, DEMOGRAPHICS, GROUPS, BEHAVIOUR = (
    "students.basic",
    "contacts",
    "students.demographics",
    "groups",
    "behaviour",
)
AREAS = (BASIC, CONTACTS, DEMOGRAPHICS, GROUPS, BEHAVIOUR)
NEVER_REQUESTED = "timetable"  # no partner asks for it, no agent uploads it
MARKED_FIELDS = {
    BASIC: ("forename", "surname"),
    CONTACTS: ("forename", "surname"),
    DEMOGRAPHICS: ("ethnicity", "religion"),
    GROUPS: ("name", "subject"),
    BEHAVIOUR: ("description", "outcome"),
}
SENSITIVE_REASONS = {DEMOGRAPHICS: "Pupil premium reporting", BEHAVIOUR: "Pastoral alerts"}
# mk<world>.s<school>.a<area>.<field>.r<record>; a record's id is the marker of field "id".
MARKER = re.compile(r"mk(\d+)\.s(\d+)\.a(\d+)\.([a-z_]+)\.r(\d+)")
PROBLEM_JSON = "application/problem+json"
MINUTE = timedelta(minutes=1)
CLOCK_MOVES = (
    timedelta(seconds=1),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=23),
    timedelta(hours=71),
    GRACE,
    timedelta(hours=73),
    timedelta(days=6),
    SUSPENSION_LIMIT + timedelta(hours=1),
)
END_OFFSETS = (
    -timedelta(days=3),
    -timedelta(hours=1),
    timedelta(0),
    timedelta(seconds=1),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=4),
)
_worlds = itertools.count(1)


def marker(world: int, school: int, area: str, name: str, record: int) -> str:
    return f"mk{world}.s{school}.a{AREAS.index(area)}.{name}.r{record}"


def request_document(areas: frozenset[str]) -> dict[str, Any]:
    """One required and one optional marked field per area, and the links (required)."""
    out: dict[str, Any] = {}
    for area in sorted(areas):
        required, optional = MARKED_FIELDS[area]
        fields = {
            required: {"required": True, "reason": "needed"},
            optional: {"required": False, "reason": "nice to have"},
        }
        if area in LINKS:
            fields[LINKS[area]] = {"required": True, "reason": "whose"}
        out[area] = {"reason": SENSITIVE_REASONS.get(area, "needed"), "fields": fields}
    return {"areas": out}


def required_fields(area: str) -> frozenset[str]:
    return frozenset({MARKED_FIELDS[area][0], *([LINKS[area]] if area in LINKS else [])})


@dataclass(frozen=True)
class AudienceModel:
    year_groups: frozenset[str] | None = None
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------
# The model: what each school granted, and so what each partner may read at any instant.


@dataclass
class ConsentModel:
    consent_id: str
    school: int
    partner: int
    granted_at: datetime
    area_sets: list[tuple[datetime, frozenset[str]]]  # the grant, then every change
    revocations: list[tuple[datetime, datetime]] = field(default_factory=list)  # (at, end_at)
    suspensions: list[list[datetime | None]] = field(default_factory=list)  # [start, resume)
    # Approved fields: every change as (at, area -> fields); removed ones get the grace.
    field_sets: list[tuple[datetime, dict[str, frozenset[str]]]] = field(default_factory=list)
    audiences: list[tuple[datetime, AudienceModel]] = field(default_factory=list)

    def approved(self, area: str, at: datetime) -> frozenset[str]:
        """Fields readable at `at`: approved, or removed less than the grace ago."""
        current: frozenset[str] = frozenset()
        leaving: dict[str, datetime] = {}
        for when, sets in self.field_sets:
            if when > at or area not in sets:
                continue
            for name in current - sets[area]:
                leaving[name] = when + GRACE
            for name in sets[area]:
                leaving.pop(name, None)
            current = sets[area]
        return current | {n for n, until in leaving.items() if at < until}

    def fields_now(self) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for _, sets in self.field_sets:
            out |= sets
        return out

    def audience(self, at: datetime) -> AudienceModel:
        return ([a for when, a in self.audiences if when <= at] or [AudienceModel()])[-1]

    def revocation_end(self, at: datetime) -> datetime | None:
        """The earliest end any revocation made by `at` set: retrospective ones get grace."""
        ends = [end if end > when else when + GRACE for when, end in self.revocations if when <= at]
        return min(ends, default=None)

    def suspended(self, at: datetime) -> bool:
        return any(s is not None and s <= at and (r is None or at < r) for s, r in self.suspensions)

    def cutoff(self, at: datetime) -> datetime | None:
        """When the whole consent ends, as known at `at`: a revocation, or 30 days suspended."""
        ends = [e for e in [self.revocation_end(at)] if e is not None]
        ends += [
            s + SUSPENSION_LIMIT
            for s, r in self.suspensions
            if s is not None and s <= at and (r is None or r > at)
        ]
        return min(ends, default=None)

    def status(self, at: datetime) -> str:
        cutoff = self.cutoff(at)
        if cutoff is not None and at >= cutoff:
            return "revoked"
        if self.suspended(at):
            return "suspended"
        return "active" if self.revocation_end(at) is None else "ending"

    def areas_at(self, at: datetime) -> frozenset[str]:
        return [areas for when, areas in self.area_sets if when <= at][-1]

    def allows(self, area: str, at: datetime) -> bool:
        if at < self.granted_at or self.status(at) in ("revoked", "suspended"):
            return False
        if area in self.areas_at(at):
            return True
        # Narrowing revokes the removed areas "now": readable until the change + grace.
        removals = [
            when
            for (_, before), (when, after) in pairwise(self.area_sets)
            if when <= at and area in before and area not in after
        ]
        return bool(removals) and at < max(removals) + GRACE

    def ends(self) -> Iterator[datetime]:
        """Every instant at which some access of this consent ends (or ended)."""
        for (_, before), (when, after) in pairwise(self.area_sets):
            if before - after:
                yield when + GRACE
        for when, end in self.revocations:
            yield end if end > when else when + GRACE
        for start, _ in self.suspensions:
            assert start is not None
            yield start + SUSPENSION_LIMIT

    def instants(self) -> Iterator[datetime]:
        """Every instant at which a decision on this consent may change."""
        yield from self.ends()
        yield from (when for when, _ in self.area_sets)
        yield from (when for when, _ in self.revocations)
        yield from (t for span in self.suspensions for t in span if t is not None)


@dataclass
class Read:
    request_id: str
    school: int | None  # None: a school that does not exist
    partner: int
    area: str
    status: int
    records: int


@dataclass
class WorldModel:
    world: int
    school_ids: list[str]
    school_names: list[str]
    partner_ids: list[str]
    requested: list[frozenset[str]]
    consents: list[ConsentModel] = field(default_factory=list)
    # (school, area) -> record id -> (values, changed at); deletions -> deleted at
    records: dict[tuple[int, str], dict[str, tuple[dict[str, Any], datetime]]] = field(
        default_factory=dict
    )
    deleted: dict[tuple[int, str], dict[str, datetime]] = field(default_factory=dict)
    numbers: dict[tuple[int, str], int] = field(default_factory=dict)  # next record number
    uploads: list[datetime] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    restricted: dict[int, set[str]] = field(default_factory=dict)  # school -> pupil ids

    def year_of(self, school: int, pupil: str) -> str | None:
        found = self.records.get((school, BASIC), {}).get(pupil)
        return None if found is None else found[0].get("year_group")

    def granting(self, partner: int, school: int, area: str, at: datetime) -> ConsentModel:
        """The consent that lets the partner read the area at `at` (the newest one)."""
        return [c for c in self.pair(school, partner) if c.allows(area, at)][-1]

    def admits(self, partner: int, school: int, pupil: Any, at: datetime) -> bool:
        """Is the pupil in the partner's view now (audience, restrictions, year groups)?"""
        if not isinstance(pupil, str) or pupil in self.restricted.get(school, set()):
            return False
        consents = [c for c in self.pair(school, partner) if c.granted_at <= at]
        audience = consents[-1].audience(at) if consents else AudienceModel()
        if pupil in audience.exclude:
            return False
        if audience.year_groups is None and audience.include is None:
            return True
        if audience.include is not None and pupil in audience.include:
            return True
        return (
            audience.year_groups is not None and self.year_of(school, pupil) in audience.year_groups
        )

    def shown(
        self, partner: int, school: int, area: str, record: dict[str, Any], now: datetime
    ) -> bool:
        """Is this (current) record in the partner's view of the area now?"""
        if area.startswith("students."):
            return self.admits(partner, school, record.get("id"), now)
        # With no rule naming who is in (only pupils out), a row linked to no pupil stays.
        consents = [c for c in self.pair(school, partner) if c.granted_at <= now]
        audience = consents[-1].audience(now) if consents else AudienceModel()
        open_rule = audience.year_groups is None and audience.include is None
        if area == BEHAVIOUR:
            pupil = record.get("student_id")
            return (open_rule and pupil is None) or self.admits(partner, school, pupil, now)
        if area == CONTACTS:
            ids = record.get("student_ids") or []
            return (open_rule and not ids) or any(self.admits(partner, school, i, now) for i in ids)
        return True

    def pair(self, school: int, partner: int) -> list[ConsentModel]:
        return [c for c in self.consents if c.school == school and c.partner == partner]

    def latest(self, school: int, partner: int) -> ConsentModel | None:
        pair = self.pair(school, partner)
        return pair[-1] if pair else None

    def entitled(self, partner: int, school: int, area: str, at: datetime) -> bool:
        return any(c.allows(area, at) for c in self.pair(school, partner))

    def expected_page(
        self, school: int, area: str, since: datetime | None
    ) -> dict[str, dict[str, Any] | None]:
        """Record id -> its values (None: reported deleted) that a full read must return."""
        current = self.records.get((school, area), {})
        out: dict[str, dict[str, Any] | None] = {
            rid: values for rid, (values, at) in current.items() if since is None or at > since
        }
        if since is not None:
            gone = self.deleted.get((school, area), {})
            out |= {rid: None for rid, at in gone.items() if at > since}
        return out


# ---------------------------------------------------------------------------------------
# Driving the broker through its HTTP APIs.


class Harness:
    def __init__(self, client: TestClient, clock: FrozenClock, model: WorldModel) -> None:
        self.client = client
        self.clock = clock
        self.model = model
        self.admins: list[Admin] = []
        self.agent_keys: list[str] = []
        self.tokens: list[str] = []
        self._ids = itertools.count(1)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def request_id(self) -> str:
        return f"iso-{self.model.world}-{next(self._ids)}-{uuid.uuid4().hex[:6]}"

    # -- admins -------------------------------------------------------------------------

    def admin_headers(self, school: int) -> dict[str, str]:
        admin = self.admins[school]
        if admin.token is None or admin.expires_at is None or self.now >= admin.expires_at:
            step = pyotp.TOTP(admin.totp_secret).timecode(self.now)
            if step <= admin.last_step:  # a code is good once: wait for the next one
                self.clock.advance(timedelta(seconds=30))
                step += 1
            body = {"email": admin.email, "password": PASSWORD, "totp": admin.code(self.now)}
            response = self.client.post("/v1/admin/login", json=body)
            assert response.status_code == 200, response.text
            admin.token = response.json()["token"]
            admin.expires_at = datetime.fromisoformat(response.json()["expires_at"])
            admin.last_step = step
        return {"Authorization": f"Bearer {admin.token}"}

    def admin(self, school: int, method: str, path: str, **kw: Any) -> Response:
        """An admin call; the headers come first because signing in may move the clock."""
        headers = self.admin_headers(school)
        response: Response = self.client.request(method, f"/v1/admin{path}", headers=headers, **kw)
        return response

    # -- agents -------------------------------------------------------------------------

    def upload(
        self, school: int, area: str, mode: str, records: list[dict[str, Any]], deleted: list[str]
    ) -> None:
        body = {
            "batch_id": str(uuid.uuid4()),
            "area": area,
            "mode": mode,
            "extracted_at": rfc3339(self.now),
            "records": records,
            "deleted": deleted,
        }
        headers = {"Authorization": f"Bearer {self.agent_keys[school]}"}
        response = self.client.post("/v1/agent/uploads", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["applied"] == len(records)
        at = self.now
        rows = self.model.records.setdefault((school, area), {})
        for record in records:
            rows[record["id"]] = ({k: v for k, v in record.items() if k != "id"}, at)
        gone = self.model.deleted.setdefault((school, area), {})
        for rid in deleted:
            del rows[rid]
            gone[rid] = at
        self.model.uploads.append(at)

    def new_record(self, school: int, area: str, data: st.DataObject) -> dict[str, Any]:
        number = self.model.numbers.get((school, area), 0)
        self.model.numbers[(school, area)] = number + 1
        w = self.model.world
        record: dict[str, Any] = {"id": marker(w, school, area, "id", number)}
        for name in MARKED_FIELDS[area]:
            record[name] = marker(w, school, area, name, number)
        pupils = sorted(self.model.records.get((school, BASIC), {}))
        if area == BASIC:
            record["year_group"] = data.draw(st.sampled_from(YEARS), label="year group")
        elif area == BEHAVIOUR and pupils:
            record["student_id"] = data.draw(st.sampled_from(pupils), label="whose")
        elif area in (CONTACTS, GROUPS) and pupils:
            linked = data.draw(st.sets(st.sampled_from(pupils), max_size=3), label="linked")
            record["student_ids"] = sorted(linked)
        return record


def build(client: TestClient, clock: FrozenClock, data: st.DataObject) -> Harness:
    resources: Resources = client.app.state.resources  # type: ignore[attr-defined]
    world = next(_worlds)
    n_schools = data.draw(st.integers(2, 3), label="schools")
    requested = data.draw(
        st.lists(
            st.sets(st.sampled_from(AREAS), min_size=1).map(frozenset), min_size=2, max_size=3
        ),
        label="partners' requested areas",
    )
    now = clock.now()
    admins: list[Admin] = []
    agent_keys: list[str] = []
    school_ids: list[str] = []
    names: list[str] = []
    partner_ids: list[str] = []
    secrets: list[tuple[str, str]] = []
    with session_scope(resources.engine) as session:
        schools = SchoolRepository(session)
        for s in range(n_schools):
            serial = world * 3 + s
            name = f"World {world} School {s}"
            new = register_school(
                schools,
                name=name,
                dfe_number=f"{300 + serial // 10_000}{serial % 10_000:04d}",
                urn=None,
                now=now,
            )
            email = f"head{s}.w{world}@school{s}.sch.uk"
            made = add_admin(
                schools,
                resources.sealer,
                school_id=new.school.id,
                email=email,
                password=PASSWORD,
                now=now,
            )
            admins.append(Admin(new.school.id, made.admin.email, made.totp_secret))
            agent_keys.append(new.agent_key)
            school_ids.append(new.school.id)
            names.append(name)
        partners = PartnerRepository(session)
        for p, areas in enumerate(requested):
            partner = register_partner(
                partners,
                resources.sealer,
                name=f"World {world} Partner {p}",
                areas=[],
                reasons={},
                webhook_url=None,
                now=now,
                request=request_document(areas),
            )
            partner_ids.append(partner.partner.id)
            secrets.append((partner.partner.client_id, partner.client_secret))
    model = WorldModel(world, school_ids, names, partner_ids, list(requested))
    harness = Harness(client, clock, model)
    harness.admins, harness.agent_keys = admins, agent_keys
    for client_id, secret in secrets:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        response = client.post("/oauth/token", data=form)
        assert response.status_code == 200, response.text
        harness.tokens.append(response.json()["access_token"])
    for s in range(n_schools):
        for area in AREAS:  # students.basic first: the other areas link to its pupils
            count = data.draw(st.integers(1, 3), label="records")
            records = [harness.new_record(s, area, data) for _ in range(count)]
            harness.upload(s, area, "full", records, [])
    return harness


# ---------------------------------------------------------------------------------------
# Steps


def step_consent_change(h: Harness, data: st.DataObject, kind: str) -> None:
    m = h.model
    s = data.draw(st.integers(0, len(m.school_ids) - 1), label="school")
    p = data.draw(st.integers(0, len(m.partner_ids) - 1), label="partner")
    requested = sorted(m.requested[p])
    latest = m.latest(s, p)
    if kind == "grant" or latest is None:
        areas = data.draw(st.sets(st.sampled_from(requested), min_size=1), label="areas")
        extra = sorted(set(AREAS) - m.requested[p])
        if extra and data.draw(st.integers(0, 9), label="unrequested?") == 0:
            areas = areas | {data.draw(st.sampled_from(extra), label="unrequested")}
        body: dict[str, Any] = {"partner_id": m.partner_ids[p], "areas": sorted(areas)}
        optional = sorted(a for a in areas if a in m.requested[p])
        with_optional = data.draw(st.sets(st.sampled_from(optional)), label="optional on")
        if with_optional:
            body["fields"] = {
                a: sorted(required_fields(a) | {MARKED_FIELDS[a][1]}) for a in with_optional
            }
        response = h.admin(s, "POST", "/consents", json=body)
        now = h.now
        live = latest is not None and latest.status(now) != "revoked"
        if not areas <= m.requested[p]:
            assert response.status_code == 422, response.text
        elif live:
            assert response.status_code == 409, response.text
        else:
            assert response.status_code == 201, response.text
            consent = ConsentModel(
                response.json()["consent_id"], s, p, now, [(now, frozenset(areas))]
            )
            approved = {
                a: required_fields(a) | ({MARKED_FIELDS[a][1]} if a in with_optional else set())
                for a in areas
            }
            consent.field_sets.append((now, approved))
            m.consents.append(consent)
            check_consent_out(response.json(), consent, now)
        return
    path = f"/consents/{latest.consent_id}"
    if kind == "change":
        areas = data.draw(st.sets(st.sampled_from(requested), min_size=1), label="new areas")
        response = h.admin(s, "PATCH", path, json={"areas": sorted(areas)})
        now = h.now
        if latest.status(now) == "revoked":
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        latest.area_sets.append((now, frozenset(areas)))
        known = latest.fields_now()
        added = {a: required_fields(a) for a in areas if a not in known}
        if added:
            latest.field_sets.append((now, added))
    elif kind == "revoke":
        offset = data.draw(st.sampled_from(END_OFFSETS), label="end_at - now")
        end_at = h.now + offset
        response = h.admin(s, "POST", f"{path}/revoke", json={"end_at": rfc3339(end_at)})
        now = h.now  # signing in may have moved the clock past end_at: that is fine
        effective = end_at if end_at > now else now + GRACE
        current = latest.revocation_end(now)
        if latest.status(now) == "revoked":
            assert response.status_code == 409, response.text
            return
        if current is not None and effective > current:
            assert response.status_code == 422, response.text  # an end is never pushed back
            return
        assert response.status_code == 200, response.text
        latest.revocations.append((now, end_at))
    elif kind == "suspend":
        response = h.admin(s, "POST", f"{path}/suspend", json={"reason": "suspected breach"})
        now = h.now
        if latest.status(now) in ("revoked", "suspended"):
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        latest.suspensions.append([now, None])
    else:  # resume
        response = h.admin(s, "POST", f"{path}/resume", json={})
        now = h.now
        if latest.status(now) != "suspended":
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        latest.suspensions[-1][1] = now
    check_consent_out(response.json(), latest, now)


def step_minimise(h: Harness, data: st.DataObject, kind: str) -> None:
    """Approve or remove the optional field, set an audience, restrict or lift a pupil."""
    m = h.model
    s = data.draw(st.integers(0, len(m.school_ids) - 1), label="school")
    pupils = sorted(m.records.get((s, BASIC), {}))
    if kind == "restrict":
        restricted = m.restricted.setdefault(s, set())
        pupil = data.draw(st.sampled_from(pupils), label="pupil") if pupils else None
        if pupil is None:
            return
        path = f"/students/{pupil}/restriction"
        if pupil in restricted:
            response = h.admin(s, "DELETE", path)
            assert response.status_code == 200, response.text
            restricted.discard(pupil)
        else:
            response = h.admin(s, "POST", path, json={"reason": "safeguarding"})
            assert response.status_code == 200, response.text
            restricted.add(pupil)
        return
    p = data.draw(st.integers(0, len(m.partner_ids) - 1), label="partner")
    latest = m.latest(s, p)
    if latest is None:
        return
    path = f"/consents/{latest.consent_id}"
    if kind == "fields":
        areas = sorted(latest.areas_at(h.now))
        area = data.draw(st.sampled_from(areas), label="area")
        on = data.draw(st.booleans(), label="optional on?")
        chosen = required_fields(area) | ({MARKED_FIELDS[area][1]} if on else set())
        response = h.admin(s, "PATCH", path, json={"fields": {area: sorted(chosen)}})
        now = h.now
        if latest.status(now) == "revoked":
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        latest.field_sets.append((now, {area: frozenset(chosen)}))
        return
    years = data.draw(st.one_of(st.none(), st.sets(st.sampled_from(YEARS))), label="years")
    include = data.draw(
        st.one_of(st.none(), st.sets(st.sampled_from(pupils))) if pupils else st.none(),
        label="include",
    )
    exclude = data.draw(st.sets(st.sampled_from(pupils)) if pupils else st.just(set()))
    body = {
        "year_groups": None if years is None else sorted(years),
        "include_students": None if include is None else sorted(include),
        "exclude_students": sorted(exclude),
    }
    response = h.admin(s, "PUT", f"{path}/audience", json=body)
    now = h.now
    if latest.status(now) == "revoked":
        assert response.status_code == 409, response.text
        return
    assert response.status_code == 200, response.text
    audience = AudienceModel(
        None if years is None else frozenset(years),
        None if include is None else frozenset(include),
        frozenset(exclude),
    )
    latest.audiences.append((now, audience))


def step_move(h: Harness, data: st.DataObject) -> None:
    """A pupil moves to another year group (a delta upload of students.basic)."""
    m = h.model
    s = data.draw(st.integers(0, len(m.school_ids) - 1), label="school")
    pupils = sorted(m.records.get((s, BASIC), {}))
    if not pupils:
        return
    pupil = data.draw(st.sampled_from(pupils), label="moving pupil")
    values = dict(m.records[(s, BASIC)][pupil][0])
    values["year_group"] = YEARS[1 - YEARS.index(values["year_group"])]
    h.clock.advance(MINUTE)
    h.upload(s, BASIC, "delta", [{"id": pupil, **values}], [])


def check_consent_out(body: dict[str, Any], consent: ConsentModel, now: datetime) -> None:
    assert body["consent_id"] == consent.consent_id
    assert body["status"] == consent.status(now), body
    assert sorted(body["areas"]) == sorted(consent.areas_at(now)), body


def step_clock(h: Harness, data: st.DataObject, to_boundary: bool) -> None:
    now = h.now
    ahead = sorted({t for c in h.model.consents for t in c.ends() if t > now})
    if to_boundary and ahead:
        target = data.draw(st.sampled_from(ahead), label="boundary")
        nudge = data.draw(st.sampled_from((timedelta(0), -timedelta(seconds=1))), label="nudge")
        h.clock.set(max(now, target + nudge))
        sweep(h)
    else:
        h.clock.advance(data.draw(st.sampled_from(CLOCK_MOVES), label="clock move"))


def step_upload(h: Harness, data: st.DataObject) -> None:
    s = data.draw(st.integers(0, len(h.model.school_ids) - 1), label="school")
    area = data.draw(st.sampled_from(AREAS), label="area")
    h.clock.advance(MINUTE)  # uploads a minute apart: updated_since never ties
    current = sorted(h.model.records.get((s, area), {}))
    deleted = []
    if len(current) > 1 and data.draw(st.booleans(), label="delete one?"):
        deleted = [data.draw(st.sampled_from(current), label="deleted")]
    h.upload(s, area, "delta", [h.new_record(s, area, data)], deleted)


def step_read(h: Harness, data: st.DataObject) -> None:
    m = h.model
    p, s, area = pick_read(m, data)
    fields: frozenset[str] | None = None
    if data.draw(st.booleans(), label="project?"):
        names = CATALOGUE[area].field_names
        fields = frozenset(data.draw(st.sets(st.sampled_from(names)), label="fields"))
    since = data.draw(
        st.sampled_from([None, m.uploads[0] - timedelta(days=1), *m.uploads]), label="since"
    )
    if since is not None and since in m.uploads:
        since += timedelta(seconds=1)
    limit = data.draw(st.sampled_from((None, 1, 2)), label="limit")
    foreign = None
    if m.cursors and data.draw(st.integers(0, 5), label="foreign cursor?") == 0:
        foreign = data.draw(st.sampled_from(m.cursors), label="cursor")
    read(h, p, s, area, fields=fields, since=since, limit=limit, foreign=foreign)


def sweep(h: Harness) -> None:
    """Read everything any consent ever named: right after a clock move onto a boundary."""
    m = h.model
    named = {
        (c.partner, c.school, a) for c in m.consents for _, areas in c.area_sets for a in areas
    }
    for p, s, area in sorted(named):
        read(h, p, s, area)


def read(
    h: Harness,
    p: int,
    s: int | None,
    area: str,
    *,
    fields: frozenset[str] | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    foreign: str | None = None,
) -> None:
    """One partner read (following its pages), checked against the model."""
    m = h.model
    school_id = m.school_ids[s] if s is not None else f"sch_nope{m.world}"
    params: dict[str, Any] = {}
    if fields is not None:
        params["fields"] = ",".join(sorted(fields))
    if since is not None:
        params["updated_since"] = rfc3339(since)
    if limit is not None:
        params["limit"] = limit
    cursor = foreign
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(20):  # pages
        if cursor is not None:
            params["cursor"] = cursor
        now = h.now
        entitled = s is not None and m.entitled(p, s, area, now)
        rid = h.request_id()
        response = h.client.get(
            f"/v1/schools/{school_id}/data/{area}",
            params=params,
            headers={"Authorization": f"Bearer {h.tokens[p]}", "X-Request-Id": rid},
        )
        check_no_leak(h, response, p, now, s, area, fields)
        body = response.json()
        if s is None:
            assert response.status_code == 404, response.text
            assert response.headers["content-type"] == PROBLEM_JSON
            m.reads.append(Read(rid, None, p, area, 404, 0))
            return
        if not entitled:
            assert response.status_code == 403, response.text
            assert response.headers["content-type"] == PROBLEM_JSON
            assert body["type"].endswith("/consent-required")
            assert body["missing_areas"] == [area]
            m.reads.append(Read(rid, s, p, area, 403, 0))
            return
        approved = m.granting(p, s, area, now).approved(area, now)
        unapproved = sorted((fields or frozenset()) - approved - {"id"})
        if unapproved:
            assert response.status_code == 403, response.text
            assert body["type"].endswith("/consent-required")
            assert body["missing_fields"] == unapproved
            m.reads.append(Read(rid, s, p, area, 403, 0))
            return
        if foreign is not None and response.status_code == 400:
            assert body["type"].endswith("/invalid-cursor") or "cursor" in body["detail"]
            m.reads.append(Read(rid, s, p, area, 400, 0))
            return
        assert response.status_code == 200, response.text
        m.reads.append(Read(rid, s, p, area, 200, len(body["data"])))
        for record in body["data"]:
            # A delta's first page may carry a departed pupil's narrowed contact or group
            # again, and its own change later: only then is a record listed twice.
            assert since is not None or record["id"] not in seen, f"{record['id']} twice"
            seen[record["id"]] = record
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            break
        m.cursors.append(cursor)
        if limit is not None and since is None:
            assert len(body["data"]) <= limit  # narrowed to the audience: maybe fewer
    else:
        pytest.fail("pagination did not end")
    if foreign is not None:
        return  # the page starts where someone else's cursor pointed: no full set to expect
    now = h.now
    consent = m.granting(p, s, area, now)
    approved = consent.approved(area, now)
    denied = m.restricted.get(s, set()) | consent.audience(now).exclude
    current = m.records.get((s, area), {})
    for rid, record in seen.items():
        if record.get("deleted") is not True:
            assert rid in current, f"{rid} is not a current record of {area}"
    for rid, values in m.expected_page(s, area, since).items():
        if values is None:
            if not (area.startswith("students.") and rid in denied):
                assert seen[rid] == {"id": rid, "deleted": True}
            continue
        if not m.shown(p, s, area, {"id": rid, **values}, now):
            assert rid not in seen or seen[rid] == {"id": rid, "deleted": True}, seen[rid]
            continue
        wanted = {
            k: v
            for k, v in values.items()
            if k in MARKED_FIELDS[area] and k in approved and (fields is None or k in fields)
        }
        assert {k: v for k, v in seen[rid].items() if k in wanted} == wanted, (rid, seen[rid])


def pick_read(m: WorldModel, data: st.DataObject) -> tuple[int, int | None, str]:
    """Mostly what some consent named at some point (live, ending, in grace or over), else
    anything, now and then a school that does not exist."""
    named = sorted(
        {(c.partner, c.school, a) for c in m.consents for _, areas in c.area_sets for a in areas}
    )
    how = data.draw(st.integers(0, 9), label="read kind")
    if named and how >= 4:
        return data.draw(st.sampled_from(named), label="consented read")
    p = data.draw(st.integers(0, len(m.partner_ids) - 1), label="partner")
    s = data.draw(st.integers(0, len(m.school_ids) - 1), label="school")
    area = data.draw(st.sampled_from((*AREAS, NEVER_REQUESTED)), label="area")
    return p, None if how == 0 else s, area


def check_no_leak(
    h: Harness,
    response: Response,
    partner: int,
    now: datetime,
    school: int | None,
    area: str,
    fields: frozenset[str] | None,
) -> None:
    """Every marker in the body: this world's, entitled now, and (on 200) what was asked."""
    m = h.model
    for match in MARKER.finditer(response.text):
        world, s, a, name = int(match[1]), int(match[2]), AREAS[int(match[3])], match[4]
        where = f"{match[0]} in {response.status_code} {response.text[:300]}"
        assert world == m.world, f"another world's data: {where}"
        if a == BASIC and name == "id" and area != BASIC:
            # A pupil's id linking a row (or a departed pupil's deletion): this school's.
            assert response.status_code == 200, f"a pupil id: {where}"
            assert s == school, f"another school's pupil: {where}"
            continue
        assert m.entitled(partner, s, a, now), f"not entitled: {where}"
        if response.status_code == 200:
            assert (s, a) == (school, area), f"not the school/area asked: {where}"
            assert name == "id" or fields is None or name in fields, f"not projected: {where}"
    for other, name in enumerate(m.school_names):
        if other != school:
            assert name not in response.text
    if response.status_code == 200:
        assert school is not None
        allowed = set(CATALOGUE[area].field_names if fields is None else fields) | {"id"}
        approved = m.granting(partner, school, area, now).approved(area, now) | {"id"}
        for record in response.json()["data"]:
            if record.get("deleted") is True:
                assert set(record) == {"id", "deleted"}, record
                continue
            assert set(record) <= allowed, record
            assert set(record) <= approved, f"a field not approved now: {record}"
            held = m.records.get((school, area), {}).get(record["id"])
            assert held is not None, f"not a current record: {record}"
            full = {"id": record["id"], **held[0]}  # the links, even when projected out
            assert m.shown(partner, school, area, full, now), f"outside the audience: {record}"
            for pupil in record.get("student_ids") or ():
                assert m.admits(partner, school, pupil, now), f"a pupil not shared: {record}"


def step_partner_views(h: Harness, data: st.DataObject) -> None:
    """`GET /v1/schools` and `GET /v1/schools/{id}/consent` show only my own consents."""
    m = h.model
    p = data.draw(st.integers(0, len(m.partner_ids) - 1), label="partner")
    headers = {"Authorization": f"Bearer {h.tokens[p]}"}
    now = h.now
    response = h.client.get("/v1/schools", headers=headers)
    assert response.status_code == 200, response.text
    listed = {entry["school_id"]: entry for entry in response.json()["data"]}
    mine = {m.school_ids[c.school] for c in m.consents if c.partner == p}
    assert set(listed) == mine
    for s, school_id in enumerate(m.school_ids):
        consent = m.latest(s, p)
        one = h.client.get(f"/v1/schools/{school_id}/consent", headers=headers)
        if consent is None:
            assert one.status_code == 404, one.text
            assert school_id not in listed
            continue
        assert one.status_code == 200, one.text
        for view in (one.json(), listed[school_id]["consent"]):
            assert view["status"] == consent.status(now), (view, consent)
            assert sorted(view["areas"]) == sorted(consent.areas_at(now))
        assert one.json()["consent_id"] == consent.consent_id


def step_foreign_admin(h: Harness, data: st.DataObject) -> None:
    """An admin reaching for another school's consent finds nothing, and changes nothing."""
    m = h.model
    s = data.draw(st.integers(0, len(m.school_ids) - 1), label="admin's school")
    theirs = [c for c in m.consents if c.school != s]
    if not theirs:
        return
    target = data.draw(st.sampled_from(theirs), label="their consent")
    method, suffix, body = data.draw(
        st.sampled_from(
            (
                ("GET", "", None),
                ("PATCH", "", {"areas": sorted(m.requested[target.partner])}),
                ("POST", "/revoke", {"end_at": rfc3339(h.now)}),
                ("POST", "/suspend", {"reason": "not yours"}),
                ("POST", "/resume", {}),
                ("GET", "/receipt", None),
                ("GET", "/reads-after-end", None),
            )
        ),
        label="attempt",
    )
    kw: dict[str, Any] = {} if body is None else {"json": body}
    response = h.admin(s, method, f"/consents/{target.consent_id}{suffix}", **kw)
    assert response.status_code == 404, response.text
    assert m.school_ids[target.school] not in response.text


def step_decision(h: Harness, data: st.DataObject) -> None:
    """The admin's decision at any instant, past or future, agrees with the model."""
    m = h.model
    s = data.draw(st.integers(0, len(m.school_ids) - 1), label="school")
    p = data.draw(st.integers(0, len(m.partner_ids) - 1), label="partner")
    area = data.draw(st.sampled_from((*AREAS, NEVER_REQUESTED)), label="area")
    instants = sorted({t for c in m.pair(s, p) for t in c.instants()} | {h.now})
    at = data.draw(st.sampled_from(instants), label="at") + data.draw(
        st.sampled_from((timedelta(0), -timedelta(seconds=1))), label="nudge"
    )
    params = {"partner_id": m.partner_ids[p], "area": area, "at": rfc3339(at)}
    response = h.admin(s, "GET", "/decision", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["allowed"] is m.entitled(p, s, area, at), (response.json(), at)


def check_admin_views(h: Harness) -> None:
    """Each school's log is exactly the reads of its data; its consents exactly its own."""
    m = h.model
    for s in range(len(m.school_ids)):
        entries: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            response = h.admin(s, "GET", "/access-log", params=params)
            assert response.status_code == 200, response.text
            entries += response.json()["data"]
            cursor = response.json()["meta"]["next_cursor"]
            if cursor is None:
                break
            params["cursor"] = cursor
        by_id = {e["request_id"]: e for e in entries}
        assert len(by_id) == len(entries), "one entry per read"
        mine = {r.request_id: r for r in m.reads if r.school == s}
        assert set(by_id) <= set(mine), "another school's reads in this log"
        for read in mine.values():
            if read.status == 400:
                continue  # a refused cursor: no data left, logged or not
            entry = by_id.get(read.request_id)
            assert entry is not None, f"read {read} is not in the access log"
            assert entry["partner_id"] == m.partner_ids[read.partner]
            assert entry["areas"] == [read.area]
            assert entry["decision"] == ("allowed" if read.status == 200 else "denied")
            assert entry["record_count"] == read.records
        consents = h.admin(s, "GET", "/consents")
        assert consents.status_code == 200, consents.text
        listed = {c["consent_id"]: c for c in consents.json()["data"]}
        own = {c.consent_id: c for c in m.consents if c.school == s}
        assert set(listed) == set(own), "a school sees exactly its own consents"
        for consent_id, view in listed.items():
            check_consent_out(view, own[consent_id], h.now)
        partners = h.admin(s, "GET", "/partners")
        assert partners.status_code == 200, partners.text
        for entry in partners.json()["data"]:
            if entry["consent"] is not None:
                assert entry["consent"]["consent_id"] in own
            if entry["partner_id"] in m.partner_ids:
                latest = m.latest(s, m.partner_ids.index(entry["partner_id"]))
                shown = entry["consent"] and entry["consent"]["consent_id"]
                assert shown == (latest and latest.consent_id)
        for other, other_id in enumerate(m.school_ids):
            if other != s:
                assert other_id not in consents.text + partners.text


STEPS = (
    "read",
    "read",
    "read",
    "read",
    "read",
    "read",
    "read",
    "read",
    "grant",
    "grant",
    "grant",
    "change",
    "revoke",
    "revoke",
    "suspend",
    "resume",
    "advance",
    "advance",
    "boundary",
    "boundary",
    "upload",
    "partner views",
    "foreign admin",
    "decision",
    "fields",
    "fields",
    "audience",
    "audience",
    "restrict",
    "move",
    "move",
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_partner_ever_reads_what_it_was_not_entitled_to(
    client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    cheap_argon2(monkeypatch)
    h = build(client, clock, data)
    steps = data.draw(st.lists(st.sampled_from(STEPS), min_size=20, max_size=60), label="steps")
    for kind in steps:
        if kind == "read":
            step_read(h, data)
        elif kind in ("grant", "change", "revoke", "suspend", "resume"):
            step_consent_change(h, data, kind)
        elif kind in ("advance", "boundary"):
            step_clock(h, data, to_boundary=kind == "boundary")
        elif kind == "upload":
            step_upload(h, data)
        elif kind in ("fields", "audience", "restrict"):
            step_minimise(h, data, kind)
        elif kind == "move":
            step_move(h, data)
        elif kind == "partner views":
            step_partner_views(h, data)
        elif kind == "foreign admin":
            step_foreign_admin(h, data)
        else:
            step_decision(h, data)
    check_admin_views(h)
