"""The partner read path: consent decision, access log, then the cached page.

Order is the contract: the decision comes from the consent engine as it stands now; the
access-log entry is committed before a byte of data leaves (if it cannot be written the
read fails); denied attempts are logged too, so a school sees who tried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlmodel import Session, select

from broker.agenthub import commands
from broker.clock import rfc3339
from broker.db import session_scope
from broker.errors import DomainError, NotFoundError
from broker.ops.metrics import decision_counter
from broker.partners.projection import (
    EVERY_PUPIL,
    PUPIL_LINKED,
    Admitted,
    AudienceResolver,
    departures_as_records,
    left_since,
    narrow,
    scan,
)
from broker.schools.models import School, SchoolStatus
from cache.edge import HotReader
from cache.errors import NotCachedError
from cache.service import CacheService, PageQuery, ServedPage
from consent.access_log import AccessLogWriter, LogEntry
from consent.areas import get_area
from consent.decisions import DecisionCache
from consent.engine import ConsentSnapshot, Decision, snapshot_at
from consent.models import Consent
from consent.repository import ConsentRepository

# Remembering that a partner asked for an area is a write; once per this many seconds is
# plenty for a policy measured in days.
MARK_REQUESTED_EVERY = 600.0
FETCH_RETRY_AFTER_SECONDS = 60


class ConsentRequiredError(DomainError):
    status = 403
    slug = "consent-required"
    title = "Consent required"


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    page: ServedPage | None  # None: not cached yet, an extraction is queued
    decision: Decision


def consent_view(snapshot: ConsentSnapshot) -> dict[str, Any]:
    ends = snapshot.ends_at
    return {
        "consent_id": snapshot.consent_id,
        "status": snapshot.status,
        "areas": sorted(snapshot.areas),
        "mode": snapshot.mode,
        "granted_at": rfc3339(snapshot.granted_at),
        "ends_at": rfc3339(ends) if ends else None,
    }


def my_consent(
    session: Session, partner_id: str, school_id: str, now: datetime, grace: timedelta
) -> dict[str, Any] | None:
    """The partner's latest consent with the school, as it stands now."""
    timelines = ConsentRepository(session).timelines(school_id, partner_id, grace)
    started = [t for t in timelines if t.granted_at <= now]
    if not started:
        return None
    latest = max(started, key=lambda t: t.granted_at)
    return consent_view(snapshot_at(latest, now))


def my_schools(
    session: Session, partner_id: str, now: datetime, grace: timedelta
) -> list[dict[str, Any]]:
    """Schools with a consent, past or present, for the partner."""
    stmt = select(Consent.school_id).where(Consent.partner_id == partner_id).distinct()
    school_ids = sorted(session.exec(stmt).all())
    out = []
    for school_id in school_ids:
        school = session.get(School, school_id)
        consent = my_consent(session, partner_id, school_id, now, grace)
        if school is None or consent is None:
            continue
        out.append(
            {
                "school_id": school.id,
                "name": school.name,
                "dfe_number": school.dfe_number,
                "consent": {k: consent[k] for k in ("status", "areas", "ends_at")},
            }
        )
    return out


class PartnerReads:
    """One per API process: composes the decision cache, the access log and the cache."""

    def __init__(
        self,
        engine: Engine,
        decisions: DecisionCache,
        access_log: AccessLogWriter,
        cache: CacheService,
        hot_reader: HotReader | None = None,
    ) -> None:
        self.engine = engine
        self.decisions = decisions
        self.access_log = access_log
        self.cache = cache
        self.hot_reader = hot_reader
        self.audiences = AudienceResolver(
            engine, cache, None if hot_reader is None else hot_reader.edge
        )
        decisions.on_drop(self.audiences.drop)
        self._marked: dict[tuple[str, str], float] = {}

    async def log(
        self,
        partner_id: str,
        query: PageQuery,
        decision: Decision,
        count: int,
        request_id: str,
        now: datetime,
    ) -> None:
        decision_counter(decision.allowed, decision.reason).inc()
        await self.access_log.append(
            LogEntry(
                school_id=query.school_id,
                partner_id=partner_id,
                areas=(query.area,),
                record_count=count,
                decision="allowed" if decision.allowed else "denied",
                reason=decision.reason,
                request_id=request_id,
                at=now,
                consent_id=decision.consent_id,
                fields=None if decision.fields is None else tuple(sorted(query.fields or ())),
            )
        )

    def projected(
        self, partner_id: str, query: PageQuery, decision: Decision, now: datetime
    ) -> tuple[PageQuery | None, list[str]]:
        """The query narrowed to what the consent shares, from memory only.

        (query, []) when it can be served; (None, missing) when `fields=` names fields not
        approved; (None, []) when the partner's admitted pupils are not in memory (the
        caller works them out with `projected_async`).  Fields are narrowed to the
        approved ones; an `updated_since` before a field was removed reads everything
        again (each record without it); the audience names the page.
        """
        approved = decision.fields
        fields = query.fields
        if approved is not None:
            if fields is None:
                fields = approved
            else:
                known = frozenset(get_area(query.area).field_names)
                missing = sorted((fields & known) - approved)
                if missing:
                    return None, missing
        since = query.updated_since
        if since is not None and approved is not None:
            before = self.decisions.decide_cached(partner_id, query.school_id, query.area, since)
            every = frozenset(get_area(query.area).field_names)
            if before.allowed and (before.fields or every) - approved:
                since = None  # a field left the view: send every record without it
        admitted = EVERY_PUPIL
        if query.area in PUPIL_LINKED:
            held = self.audiences.held(query.school_id, partner_id, decision.audience)
            if held is None:
                return None, []
            admitted = held
        if fields is query.fields and since is query.updated_since and not admitted.key:
            return query, []
        return dataclasses.replace(
            query, fields=fields, updated_since=since, audience=admitted.key
        ), []

    async def project(
        self, partner_id: str, query: PageQuery, decision: Decision, request_id: str, now: datetime
    ) -> PageQuery:
        """`projected`, working the admitted pupils out when needed; fields not approved
        are a logged 403."""
        projected, missing = self.projected(partner_id, query, decision, now)
        if projected is None and not missing:
            await asyncio.to_thread(
                self.audiences.resolve, query.school_id, partner_id, decision.audience, now
            )
            projected, missing = self.projected(partner_id, query, decision, now)
        if missing:
            refused = dataclasses.replace(decision, allowed=False, reason="not_granted")
            await self.log(partner_id, query, refused, 0, request_id, now)
            raise ConsentRequiredError(
                f"fields not approved by this school: {', '.join(missing)}",
                missing_fields=missing,
                reason="field_not_approved",
            )
        if projected is None:  # dropped again meanwhile (an invalidation): work it out here
            admitted = await asyncio.to_thread(
                self.audiences.resolve, query.school_id, partner_id, decision.audience, now
            )
            projected = dataclasses.replace(query, audience=admitted.key)
        return projected

    def _admitted(
        self, partner_id: str, query: PageQuery, decision: Decision, now: datetime
    ) -> Admitted:
        if query.area not in PUPIL_LINKED:
            return EVERY_PUPIL
        return self.audiences.resolve(query.school_id, partner_id, decision.audience, now)

    async def decide(
        self, partner_id: str, query: PageQuery, request_id: str, now: datetime
    ) -> Decision:
        decision = await self.decisions.decide(partner_id, query.school_id, [query.area], now)
        if decision.allowed:
            return decision
        if decision.consent_id is None and not self._school_exists(query.school_id):
            raise NotFoundError(f"no school {query.school_id!r}")
        await self.log(partner_id, query, decision, 0, request_id, now)
        raise ConsentRequiredError(
            f"no consent covering {query.area} at this school now ({decision.reason})",
            missing_areas=list(decision.missing_areas) or [query.area],
            reason=decision.reason,
        )

    def _school_exists(self, school_id: str) -> bool:
        with Session(self.engine) as session:
            school = session.get(School, school_id)
            return school is not None and school.status is SchoolStatus.ACTIVE

    async def fetch_hot(self, query: PageQuery, now: datetime) -> ServedPage | None:
        """The page if this process can serve it hot on the event loop, else None (`fetch`)."""
        if self.hot_reader is None:
            return None
        return await self.hot_reader.read(query, now)

    def fetch(
        self, partner_id: str, query: PageQuery, decision: Decision, now: datetime
    ) -> ServedPage | None:
        """The page, or None when the area is not cached yet (an extraction is then queued).

        Narrowed to the partner's admitted pupils; the first page of an `updated_since`
        read also carries the pupils who left the partner's view since then.
        """
        admitted = self._admitted(partner_id, query, decision, now)
        with session_scope(self.engine) as session:
            self._mark_requested(session, query, now)
            left: frozenset[str] = frozenset()
            if query.updated_since is not None and query.cursor is None and admitted.key:
                left = left_since(
                    session, self.cache, query.school_id, partner_id, query.updated_since, admitted
                )
            try:
                page = self.cache.read_page(
                    session,
                    school_id=query.school_id,
                    area=query.area,
                    fields=query.fields,
                    updated_since=query.updated_since,
                    limit=query.limit,
                    cursor=query.cursor,
                    now=now,
                    audience=query.audience,
                    narrow=None if admitted.everyone else self._narrower(query.area, admitted),
                    keep_hot=not left,
                )
                if left:
                    page = self._with_departures(session, query, admitted, left, page, now)
                return page
            except NotCachedError:
                # During a grace window no new extraction starts on this partner's behalf.
                if not decision.in_grace:
                    commands.request_extract(
                        session,
                        school_id=query.school_id,
                        areas=[query.area],
                        reason=f"partner:{partner_id} read {query.area}",
                        now=now,
                    )
                return None

    @staticmethod
    def _narrower(
        area: str, admitted: Admitted
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        return lambda records: narrow(area, records, admitted)

    def _with_departures(
        self,
        session: Session,
        query: PageQuery,
        admitted: Admitted,
        left: frozenset[str],
        page: ServedPage,
        now: datetime,
    ) -> ServedPage:
        """The page with the departed pupils' deletions (and narrowed resends) first."""
        rows: list[dict[str, Any]] = []
        if not query.area.startswith("students."):
            scanned = scan(session, self.cache, query.school_id, query.area, None, now)
            rows = [] if scanned is None else scanned[1]
        extra = departures_as_records(query.area, left, rows, admitted)
        if query.fields is not None:
            keep = query.fields | {"id", "deleted"}
            extra = [{k: v for k, v in r.items() if k in keep} for r in extra]
        body = orjson.loads(page.body)
        resent = {r["id"] for r in extra}
        body["data"] = extra + [r for r in body["data"] if r.get("id") not in resent]
        encoded = orjson.dumps(body)
        etag = '"' + hashlib.sha256(encoded).hexdigest()[:32] + '"'
        return dataclasses.replace(
            page, body=encoded, etag=etag, source="warm", record_count=len(body["data"])
        )

    def _mark_requested(self, session: Session, query: PageQuery, now: datetime) -> None:
        key = (query.school_id, query.area)
        tick = time.monotonic()
        if tick - self._marked.get(key, -MARK_REQUESTED_EVERY) < MARK_REQUESTED_EVERY:
            return
        self.cache.mark_requested(session, query.school_id, query.area, now)
        self._marked[key] = tick
