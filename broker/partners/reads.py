"""The partner read path: consent decision, access log, then the cached page.

Order is the contract: the decision comes from the consent engine as it stands now; the
access-log entry is committed before a byte of data leaves (if it cannot be written the
read fails); denied attempts are logged too, so a school sees who tried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from broker.agenthub import commands
from broker.clock import rfc3339
from broker.db import session_scope
from broker.errors import DomainError, NotFoundError
from broker.ops.metrics import decision_counter
from broker.schools.models import School, SchoolStatus
from cache.edge import HotReader
from cache.errors import NotCachedError
from cache.service import CacheService, PageQuery, ServedPage
from consent.access_log import AccessLogWriter, LogEntry
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
            )
        )

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
        """The page, or None when the area is not cached yet (an extraction is then queued)."""
        with session_scope(self.engine) as session:
            self._mark_requested(session, query, now)
            try:
                return self.cache.read_page(
                    session,
                    school_id=query.school_id,
                    area=query.area,
                    fields=query.fields,
                    updated_since=query.updated_since,
                    limit=query.limit,
                    cursor=query.cursor,
                    now=now,
                )
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

    def _mark_requested(self, session: Session, query: PageQuery, now: datetime) -> None:
        key = (query.school_id, query.area)
        tick = time.monotonic()
        if tick - self._marked.get(key, -MARK_REQUESTED_EVERY) < MARK_REQUESTED_EVERY:
            return
        self.cache.mark_requested(session, query.school_id, query.area, now)
        self._marked[key] = tick
