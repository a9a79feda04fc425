"""`misbroker up --demo`: a demo school with synthetic data, a partner with a consent, and
a curl line that reads real records through the partner API.

Everything goes through the same paths as production: the school's data is uploaded over
HTTP with the agent key, the consent is granted as the school's admin, and the token comes
from the OAuth endpoint.  Running it again reuses the school and partner and issues fresh
credentials (the old ones are revoked; secrets are only ever shown once).
"""

from __future__ import annotations

import io
import secrets
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
import pyotp
import segno

from agents.mis.synthetic import SyntheticMis
from agents.progress import progress
from broker.admin.consents import SchoolConsents
from broker.clock import rfc3339
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner, rotate_client_secret
from broker.resources import Resources
from broker.schools.models import School
from broker.schools.repository import SchoolRepository
from broker.schools.service import (
    TOTP_ISSUER,
    add_admin,
    issue_agent_key,
    register_school,
    totp_context,
)
from broker.security import hash_password
from broker.settings import Settings
from consent.repository import ConsentRepository

DEMO_SCHOOL = "Oakfield Academy (demo)"
DEMO_DFE = "3029999"
DEMO_ADMIN = "demo.admin@oakfield.example"
DEMO_PARTNER = "Demo Exam App"
DEMO_PUPILS = 300
REQUESTED = {
    "school.details": "Show the centre on candidate paperwork",
    "groups": "Seat candidates by class",
    "students.basic": "Candidate names, UPNs and exam numbers",
    "contacts": "Tell parents about exam timetables",
    "students.demographics": "Access arrangements and pupil premium reporting",
    "staff.basic": "Invigilator accounts",
}
GRANTED = ("school.details", "groups", "students.basic", "contacts", "staff.basic")


@dataclass
class DemoCredentials:
    school: School
    agent_key: str
    admin_password: str
    totp_secret: str
    client_id: str
    client_secret: str


def _admin_password() -> str:
    return secrets.token_urlsafe(12) + "a1!A"


def _ensure_world(resources: Resources) -> DemoCredentials:
    now = resources.clock.now()
    with session_scope(resources.engine) as session:
        schools, partners = SchoolRepository(session), PartnerRepository(session)
        school = schools.by_dfe_number(DEMO_DFE)
        if school is None:
            created = register_school(
                schools, name=DEMO_SCHOOL, dfe_number=DEMO_DFE, urn="199999", now=now
            )
            school, agent_key = created.school, created.agent_key
        else:
            agent_key = issue_agent_key(
                schools, school_id=school.id, now=now, revoke_others=True
            ).agent_key
        password = _admin_password()
        admin = schools.admin_by_email(DEMO_ADMIN)
        if admin is None:
            new_admin = add_admin(
                schools,
                resources.sealer,
                school_id=school.id,
                email=DEMO_ADMIN,
                password=password,
                now=now,
            )
            admin, totp = new_admin.admin, new_admin.totp_secret
        else:  # like the agent key and the client secret, a new password each run
            admin.password_hash = hash_password(password)
            schools.add(admin)
            sealed = admin.totp_secret_sealed
            totp = resources.sealer.open(sealed, context=totp_context(admin.id)).decode()
        partner = partners.by_name(DEMO_PARTNER)
        if partner is None:
            registered = register_partner(
                partners,
                resources.sealer,
                name=DEMO_PARTNER,
                areas=list(REQUESTED),
                reasons=REQUESTED,
                webhook_url=None,
                now=now,
            )
            partner, client_secret = registered.partner, registered.client_secret
        else:
            client_secret = rotate_client_secret(
                partners, partner_id=partner.id, revoke_old=True, now=now
            ).client_secret
        if ConsentRepository(session).live_for_pair(school.id, partner.id) is None:
            consents = SchoolConsents(
                session,
                school=school,
                actor=f"admin:{admin.id}",
                now=now,
                grace=resources.settings.consent.revocation_grace,
            )
            consents.grant(partner.id, GRANTED, "read")
        return DemoCredentials(school, agent_key, password, totp, partner.client_id, client_secret)


def upload_full(
    client: httpx.Client, agent_key: str, area: str, records: list[dict[str, Any]], at: datetime
) -> None:
    """One area as a full upload, sent as the school's agent would send it."""
    body = {
        "batch_id": str(uuid.uuid4()),
        "area": area,
        "mode": "full",
        "extracted_at": rfc3339(at),
        "records": records,
        "deleted": [],
    }
    response = client.post(
        "/v1/agent/uploads",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {agent_key}", "Content-Type": "application/json"},
    )
    if response.status_code != 200:
        raise RuntimeError(f"upload of {area} failed: {response.status_code} {response.text[:300]}")


def _upload_school(client: httpx.Client, creds: DemoCredentials, resources: Resources) -> int:
    """The synthetic school's core data, sent as the school's agent would send it."""
    now = resources.clock.now()
    mis = SyntheticMis(
        seed=2026,
        pupils=DEMO_PUPILS,
        phase="secondary",
        school_name=DEMO_SCHOOL,
        dfe_number=DEMO_DFE,
        day=now.date(),
    )
    total = 0
    areas = sorted(mis.areas())
    with progress(len(areas), "demo load", "area") as bar:
        for area in areas:
            bar.set_postfix_str(area, refresh=False)
            records = list(mis.extract(area))
            upload_full(client, creds.agent_key, area, records, now)
            total += len(records)
            bar.update()
    return total


def run_demo(settings: Settings, base_url: str, verify: ssl.SSLContext | bool = True) -> str:
    """Load the demo through the API at `base_url`; `verify` as `up` probes its own child."""
    resources = Resources.build(settings)
    try:
        creds = _ensure_world(resources)
        with httpx.Client(base_url=base_url, timeout=60, verify=verify) as client:
            uploaded = _upload_school(client, creds, resources)
            token = client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(creds.client_id, creds.client_secret),
            ).json()["access_token"]
    finally:
        resources.close()
    sid = creds.school.id
    url = f"{base_url}/v1/schools/{sid}/data/students.basic?limit=5"
    cert = settings.broker.tls_cert_file
    cacert = f"--cacert {cert} " if cert is not None else ""
    return "\n".join(
        [
            f"demo: {DEMO_SCHOOL} {sid}: {DEMO_PUPILS} synthetic pupils, {uploaded} records",
            f"  agent key     {creds.agent_key}",
            f"  partner       {DEMO_PARTNER}  client_id {creds.client_id}",
            f"                client_secret {creds.client_secret}",
            f"  consented     {', '.join(GRANTED)}",
            "read pupils (the token lasts an hour; POST /oauth/token gives another):",
            f'  curl -s {cacert}-H "Authorization: Bearer {token}" "{url}"',
            "",
            f"school console  {base_url}/school",
            f"  sign in as    {DEMO_ADMIN}",
            f"  password      {creds.admin_password}",
            f"  authenticator secret {creds.totp_secret}, or scan:",
            terminal_qr(
                pyotp.TOTP(creds.totp_secret).provisioning_uri(
                    name=DEMO_ADMIN, issuer_name=TOTP_ISSUER
                )
            ),
        ]
    )


def terminal_qr(text: str) -> str:
    """A QR code drawn with block characters, for an authenticator app to scan off a terminal."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue().rstrip("\n")
