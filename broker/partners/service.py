"""Operator actions on partners: register with the areas requested and why."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from broker.errors import ConflictError, InvalidInputError, NotFoundError
from broker.ids import new_id
from broker.partners.models import Partner
from broker.partners.repository import PartnerRepository
from broker.partners.requests import RequestVersions, from_areas, parse_request
from broker.security import SecretSealer, digest_secret, generate_secret, secret_matches
from broker.webhooks.addresses import UrlPolicy, check_webhook_url
from consent.areas import CATALOGUE, SENSITIVE_AREAS

MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class NewPartner:
    partner: Partner
    client_secret: str
    webhook_secret: str


def webhook_context(partner_id: str) -> bytes:
    return f"webhook:{partner_id}".encode()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def validate_requests(
    areas: Sequence[str], reasons: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    if not areas:
        raise InvalidInputError("a partner must request at least one area")
    unknown = [a for a in areas if a not in CATALOGUE]
    if unknown:
        raise InvalidInputError(f"unknown data area(s): {', '.join(unknown)}")
    stray = [a for a in reasons if a not in areas]
    if stray:
        raise InvalidInputError(f"reason given for an area not requested: {', '.join(stray)}")
    for area, reason in reasons.items():
        if not reason.strip() or len(reason) > MAX_REASON_LENGTH:
            raise InvalidInputError(f"reason for {area} must be 1-{MAX_REASON_LENGTH} characters")
    # Sensitive areas are only ever shown to a school with the partner's reason beside them.
    missing = [a for a in areas if a in SENSITIVE_AREAS and a not in reasons]
    if missing:
        raise InvalidInputError(
            f'sensitive area(s) need a reason: {", ".join(missing)} (use --reason AREA="why")'
        )
    return [(a, reasons.get(a)) for a in dict.fromkeys(areas)]


def register_partner(
    repo: PartnerRepository,
    sealer: SecretSealer,
    *,
    name: str,
    areas: Sequence[str],
    reasons: Mapping[str, str],
    webhook_url: str | None,
    now: datetime,
    url_policy: UrlPolicy | None = None,
    request: Mapping[str, Any] | None = None,
) -> NewPartner:
    """Register a partner; `url_policy` defaults to production's (https to public hosts)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInputError("partner name must be 1-200 characters")
    if request is None:
        document = from_areas([a for a, _ in validate_requests(areas, reasons)], reasons)
    else:
        if areas or reasons:
            raise InvalidInputError("give --request or --areas/--reason, not both")
        document = dict(request)
    parse_request(document)  # checked before anything is written
    if webhook_url is not None:
        check_webhook_url(webhook_url, url_policy or UrlPolicy())
    if repo.by_name(name) is not None:
        raise ConflictError(f"a partner named {name!r} already exists")
    partner_id = new_id("prt")
    client_secret = generate_secret("mbs")
    webhook_secret = new_webhook_secret()
    partner = Partner(
        id=partner_id,
        name=name,
        client_id=new_id("cli"),
        client_secret_hash=digest_secret(client_secret),
        webhook_url=webhook_url,
        webhook_secret_sealed=sealer.seal(
            webhook_secret.encode(), context=webhook_context(partner_id)
        ),
        created_at=now,
    )
    try:
        repo.add(partner)
        RequestVersions(repo.session).add(partner_id, document, now)
    except IntegrityError as exc:
        raise ConflictError(f"a partner named {name!r} already exists") from exc
    return NewPartner(partner=partner, client_secret=client_secret, webhook_secret=webhook_secret)


ROTATION_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class RotatedSecret:
    partner: Partner
    client_secret: str
    previous_valid_until: datetime | None


def rotate_client_secret(
    repo: PartnerRepository, *, partner_id: str, revoke_old: bool, now: datetime
) -> RotatedSecret:
    """A new client secret; the old one stays valid for ROTATION_OVERLAP unless revoked."""
    partner = repo.get(partner_id)
    if partner is None:
        raise NotFoundError(f"no partner {partner_id!r}")
    client_secret = generate_secret("mbs")
    if revoke_old:
        partner.previous_secret_hash = None
        partner.previous_secret_expires_at = None
    else:
        partner.previous_secret_hash = partner.client_secret_hash
        partner.previous_secret_expires_at = now + ROTATION_OVERLAP
    partner.client_secret_hash = digest_secret(client_secret)
    repo.add(partner)
    return RotatedSecret(partner, client_secret, partner.previous_secret_expires_at)


def client_secret_valid(partner: Partner, secret: str, now: datetime) -> bool:
    if secret_matches(secret, partner.client_secret_hash):
        return True
    expires = partner.previous_secret_expires_at
    return (
        partner.previous_secret_hash is not None
        and expires is not None
        and now < expires
        and secret_matches(secret, partner.previous_secret_hash)
    )
