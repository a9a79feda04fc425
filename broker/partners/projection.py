"""What one partner may see of an area: its approved fields and the pupils it is shared.

The consent decision carries the approved fields and the audience rule (both part of the
consent's event history); this module turns the rule into the set of pupils it admits at
a school now (year groups come from `students.basic`, which the rule follows as pupils
move; restricted pupils are never admitted) and narrows records to it:

- `students.*`: records of admitted pupils only;
- `attendance.marks`, `behaviour`, `exams`: rows of admitted pupils only;
- `contacts`: contacts linked to an admitted pupil, their links narrowed to those pupils;
- `groups`: every group, its `student_ids` narrowed to admitted pupils.

Each API process holds the admitted set per (school, partner) next to the decision cache,
valid for one `students.basic` version and dropped with the pair's decisions (so a
restriction or audience change reaches every process as a consent change does).  Working
it out also records, in the database, which pupils left the partner's view since it was
last worked out (`AudienceDeparture`): the partner's `updated_since` reads carry them as
deletions.  The set's fingerprint names the hot pages built for it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.partners.models import AudienceDeparture, AudienceView
from broker.schools import restrictions
from cache import repository as cache_repo
from cache import warm
from cache.crypto import Slot, open_json, seal_json
from cache.edge import EdgeCache
from cache.errors import NotCachedError
from cache.service import CacheService
from consent.events import Audience

BASIC: Final = "students.basic"
STUDENT_ROW_AREAS: Final = frozenset({"attendance.marks", "behaviour", "exams"})
# Areas whose records are pupil-linked, so narrowed by an audience.
PUPIL_LINKED: Final = frozenset(
    {
        "students.basic",
        "students.contact_details",
        "students.demographics",
        "students.sen",
        "students.attendance_summary",
        "students.photos",
        "contacts",
        "groups",
        *STUDENT_ROW_AREAS,
    }
)
Record = dict[str, Any]
MAX_SCHOOLS_HELD: Final = 256  # schools whose pupils' year groups a process keeps


@dataclass(frozen=True, slots=True)
class Admitted:
    """The pupils a partner is shared at a school: `allow` None is every pupil."""

    allow: frozenset[str] | None
    deny: frozenset[str]
    key: str  # "" for everyone; else a fingerprint of the set and its departures

    @property
    def everyone(self) -> bool:
        return self.allow is None and not self.deny

    def admits(self, student_id: Any) -> bool:
        if not isinstance(student_id, str) or student_id in self.deny:
            return False
        return self.allow is None or student_id in self.allow

    def keeps(self, student_id: Any) -> bool:
        """A row linked to this pupil (or to none) is shared: with no rule naming who is in
        (only pupils out), a row linked to no pupil stays, as it did before audiences."""
        if self.allow is None and student_id is None:
            return True
        return self.admits(student_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "allow": None if self.allow is None else sorted(self.allow),
            "deny": sorted(self.deny),
        }


EVERY_PUPIL: Final = Admitted(None, frozenset(), "")


def narrow(area: str, records: list[Record], admitted: Admitted) -> list[Record]:
    """The records of `area` the admitted pupils' partner may see (tombstones kept)."""
    if admitted.everyone or area not in PUPIL_LINKED:
        return records
    out: list[Record] = []
    for record in records:
        if record.get("deleted") is True:
            if area.startswith("students.") and record.get("id") in admitted.deny:
                continue  # not even the id of a restricted or excluded pupil
            out.append(record)
        elif area.startswith("students."):
            if admitted.admits(record.get("id")):
                out.append(record)
        elif area in STUDENT_ROW_AREAS:
            if admitted.keeps(record.get("student_id")):
                out.append(record)
        elif area == "contacts":
            kept = _linked(record, admitted)
            if kept is not None:
                out.append(kept)
        else:  # groups: every group, members narrowed
            out.append(_members(record, admitted))
    return out


def _linked(record: Record, admitted: Admitted) -> Record | None:
    ids = record.get("student_ids")
    links = record.get("student_links")
    linked = [i for i in ids or () if admitted.admits(i)]
    linked_by_links = [
        link
        for link in links or ()
        if isinstance(link, dict) and admitted.admits(link.get("student_id"))
    ]
    unlinked = not ids and not links
    if not linked and not linked_by_links and not (unlinked and admitted.allow is None):
        return None
    out = dict(record)
    if "student_ids" in out and ids is not None:
        out["student_ids"] = linked
    if "student_links" in out and links is not None:
        out["student_links"] = linked_by_links
    return out


def _members(record: Record, admitted: Admitted) -> Record:
    ids = record.get("student_ids")
    if not isinstance(ids, list):
        return record
    return {**record, "student_ids": [i for i in ids if admitted.admits(i)]}


def departures_as_records(
    area: str, left: frozenset[str], rows: Iterable[Record], admitted: Admitted
) -> list[Record]:
    """What `updated_since` must carry for pupils who left the view: a deletion for each
    record of theirs, and a pupil-linked record still shared (a contact of a pupil still
    in view, a group) again, narrowed, without them."""
    if not left or area not in PUPIL_LINKED:
        return []
    if area.startswith("students."):
        return [{"id": pupil, "deleted": True} for pupil in sorted(left)]
    out: list[Record] = []
    for record in rows:
        if area in STUDENT_ROW_AREAS:
            if record.get("student_id") in left:
                out.append({"id": record["id"], "deleted": True})
            continue
        ids = set(record.get("student_ids") or ())
        ids |= {
            link.get("student_id")
            for link in record.get("student_links") or ()
            if isinstance(link, dict)
        }
        if not ids & left:
            continue
        kept = _linked(record, admitted) if area == "contacts" else _members(record, admitted)
        out.append({"id": record["id"], "deleted": True} if kept is None else kept)
    return out


def fingerprint(admitted: Admitted, epoch: int) -> str:
    if admitted.everyone:
        return ""
    digest = hashlib.sha256()
    digest.update(b"*" if admitted.allow is None else "\0".join(sorted(admitted.allow)).encode())
    digest.update(b"\1" + "\0".join(sorted(admitted.deny)).encode())
    return f"{digest.hexdigest()[:32]}.{epoch}"


@dataclass(slots=True)
class _Held:
    audience: Audience
    basic_version: int | None  # the students.basic version the set was made from
    admitted: Admitted
    deadline: float


class AudienceResolver:
    """Admitted pupils per (school, partner) in one API process; see the module doc."""

    def __init__(
        self,
        engine: Any,
        cache: CacheService,
        edge: EdgeCache | None,
        *,
        max_age: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.edge = edge
        self.max_age = max_age
        self._monotonic = monotonic
        self._held: dict[tuple[str, str], _Held] = {}
        self._generation = 0
        self._lock = threading.Lock()
        # One load per pair at a time: the readers that missed together wait for it.
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        # Pupil -> year group per school, for the students.basic version it was read from:
        # a refresh after the backstop age costs one indexed SELECT, not a decryption.
        self._pupils: dict[str, tuple[int, dict[str, str | None]]] = {}

    def drop(self, school_id: str | None, partner_id: str | None) -> None:
        with self._lock:
            self._generation += 1
            if school_id is None:
                self._held.clear()
            elif partner_id is None:
                for key in [k for k in self._held if k[0] == school_id]:
                    del self._held[key]
            else:
                self._held.pop((school_id, partner_id), None)

    def held(self, school_id: str, partner_id: str, audience: Audience) -> Admitted | None:
        """The admitted set if it is in memory and still valid: no I/O (the fast lane)."""
        held = self._held.get((school_id, partner_id))
        if held is None or held.audience != audience or self._monotonic() >= held.deadline:
            return None
        if held.basic_version is not None:
            state = None if self.edge is None else self.edge.state(school_id, BASIC)
            if state is None or state.data_version != held.basic_version:
                return None
        return held.admitted

    def resolve(
        self, school_id: str, partner_id: str, audience: Audience, now: datetime
    ) -> Admitted:
        """Work the set out (in a thread), recording who left the view since last time."""
        found = self.held(school_id, partner_id, audience)
        if found is not None:
            return found
        with self._lock:
            loading = self._loading.setdefault((school_id, partner_id), threading.Lock())
        with loading:
            found = self.held(school_id, partner_id, audience)
            if found is not None:
                return found
            return self._resolve(school_id, partner_id, audience, now)

    def _resolve(
        self, school_id: str, partner_id: str, audience: Audience, now: datetime
    ) -> Admitted:
        generation = self._generation
        started = self._monotonic()
        for attempt in (1, 2):
            with Session(self.engine) as session:
                admitted, version = self._admitted(session, school_id, audience, now)
                try:
                    epoch = reconcile(session, self.cache, school_id, partner_id, admitted, now)
                    session.commit()
                    break
                except IntegrityError:
                    # Another process recorded the same view at the same time: read its.
                    session.rollback()
                    if attempt == 2:
                        raise
        admitted = Admitted(admitted.allow, admitted.deny, fingerprint(admitted, epoch))
        with self._lock:
            if generation == self._generation:
                held = _Held(audience, version, admitted, started + self.max_age)
                self._held[(school_id, partner_id)] = held
        return admitted

    def _admitted(
        self, session: Session, school_id: str, audience: Audience, now: datetime
    ) -> tuple[Admitted, int | None]:
        _, restricted = restrictions.load(session, self.cache.keyring, school_id)
        deny = frozenset(restricted) | audience.exclude_students
        if audience.year_groups is None and audience.include_students is None:
            return Admitted(None, deny, ""), None
        state = cache_repo.area_state(session.connection(), school_id, BASIC)
        known = self._pupils.get(school_id)
        version: int | None
        if state is not None and known is not None and known[0] == state.data_version:
            version, pupils = known
        else:
            version, pupils = pupils_of(session, self.cache, school_id, now)
            if version is not None:
                with self._lock:
                    if len(self._pupils) >= MAX_SCHOOLS_HELD:
                        self._pupils.clear()  # read again when needed; memory stays bounded
                    self._pupils[school_id] = (version, pupils)
        if state is not None and state.data_version == version and self.edge is not None:
            self.edge.hold_state(state, self.edge.generation)
        allow = frozenset(
            pupil for pupil, year in pupils.items() if audience.admits(pupil, year)
        ) | (audience.include_students or frozenset())
        return Admitted(allow - deny, deny, ""), version


def pupils_of(
    session: Session, cache: CacheService, school_id: str, now: datetime
) -> tuple[int | None, dict[str, str | None]]:
    """(students.basic version, pupil id -> year group); (None, {}) when not cached yet."""
    records = scan(session, cache, school_id, BASIC, frozenset({"year_group"}), now)
    if records is None:
        return None, {}
    version, rows = records
    return version, {r["id"]: r.get("year_group") for r in rows}


def scan(
    session: Session,
    cache: CacheService,
    school_id: str,
    area: str,
    fields: frozenset[str] | None,
    now: datetime,
) -> tuple[int, list[Record]] | None:
    """Every live record of an area (decrypted in memory only); None if not cached."""
    out: list[Record] = []
    cursor = None
    version = None
    try:
        while True:
            page = warm.read_page(
                session,
                cache.keyring,
                blobs=cache.blobs,
                namer=cache.namer,
                school_id=school_id,
                area=area,
                fields=fields,
                updated_since=None,
                limit=warm.MAX_LIMIT,
                cursor=cursor,
                now=now,
            )
            version = page.data_version if version is None else version
            out.extend(page.records)
            cursor = page.next_cursor
            if cursor is None:
                return version, out
    except NotCachedError:
        return None


def _view_slot(school_id: str, partner_id: str) -> Slot:
    return Slot(school_id, BASIC, f"audience:{partner_id}", 0)


def _departure_slot(school_id: str, partner_id: str) -> Slot:
    return Slot(school_id, BASIC, f"departure:{partner_id}", 0)


def reconcile(
    session: Session,
    cache: CacheService,
    school_id: str,
    partner_id: str,
    admitted: Admitted,
    now: datetime,
) -> int:
    """Compare `admitted` with the view last recorded; record the pupils who left.

    Returns the pair's departure count (part of page names: a page built before a
    departure is never served after it).
    """
    keyring = cache.keyring
    new_key = fingerprint(admitted, 0)
    view = session.get(AudienceView, (school_id, partner_id))
    old_key = "" if view is None else view.fingerprint
    if new_key != old_key:
        old = EVERY_PUPIL
        if view is not None:
            raw = open_json(keyring, _view_slot(school_id, partner_id), view.members_sealed)
            allow = raw.get("allow")
            old = Admitted(
                None if allow is None else frozenset(allow), frozenset(raw["deny"]), old_key
            )
        universe = set(admitted.deny) | set(old.allow or ())
        if old.allow is None and admitted.allow is not None:
            universe |= set(pupils_of(session, cache, school_id, now)[1])
        left = sorted(p for p in universe if old.admits(p) and not admitted.admits(p))
        if left:
            session.add(
                AudienceDeparture(
                    school_id=school_id,
                    partner_id=partner_id,
                    left_at=now,
                    ids_sealed=seal_json(keyring, _departure_slot(school_id, partner_id), left),
                )
            )
        sealed = seal_json(keyring, _view_slot(school_id, partner_id), admitted.as_json())
        if view is None:
            view = AudienceView(
                school_id=school_id,
                partner_id=partner_id,
                fingerprint=new_key,
                members_sealed=sealed,
                updated_at=now,
            )
        else:
            view.fingerprint, view.members_sealed, view.updated_at = new_key, sealed, now
        session.add(view)
        session.flush()
    count = session.exec(
        select(func.count())
        .select_from(AudienceDeparture)
        .where(AudienceDeparture.school_id == school_id, AudienceDeparture.partner_id == partner_id)
    ).one()
    return int(count)


def left_since(
    session: Session,
    cache: CacheService,
    school_id: str,
    partner_id: str,
    since: datetime,
    admitted: Admitted,
) -> frozenset[str]:
    """Pupils who left the partner's view after `since` and are not back in it."""
    rows = session.exec(
        select(AudienceDeparture).where(
            AudienceDeparture.school_id == school_id,
            AudienceDeparture.partner_id == partner_id,
            col(AudienceDeparture.left_at) > since,
        )
    ).all()
    slot = _departure_slot(school_id, partner_id)
    left = {p for row in rows for p in open_json(cache.keyring, slot, row.ids_sealed)}
    return frozenset(p for p in left if not admitted.admits(p))
