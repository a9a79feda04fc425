"""Operator actions on schools: register, add an admin, close."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlalchemy.exc import IntegrityError

from broker.admin.recovery import forget_recovery_codes
from broker.errors import ConflictError, InvalidInputError, NotFoundError
from broker.ids import new_id
from broker.schools.models import Agent, School, SchoolAdmin, SchoolStatus
from broker.schools.repository import SchoolRepository
from broker.security import (
    SecretSealer,
    digest_secret,
    generate_secret,
    hash_password,
    password_policy_problems,
)

TOTP_ISSUER = "misbroker"
_DFE_RE = re.compile(r"^\d{7}$")
_URN_RE = re.compile(r"^\d{6,7}$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


@dataclass(frozen=True)
class NewSchool:
    school: School
    agent_key: str


@dataclass(frozen=True)
class IssuedAgentKey:
    agent: Agent
    agent_key: str


@dataclass(frozen=True)
class NewAdmin:
    admin: SchoolAdmin
    totp_secret: str
    otpauth_uri: str


def totp_context(admin_id: str) -> bytes:
    return f"totp:{admin_id}".encode()


def validate_dfe_number(dfe_number: str) -> str:
    value = dfe_number.strip().replace("/", "")
    # LA codes run 201-938; establishment numbers are four digits.
    if not _DFE_RE.match(value) or not 201 <= int(value[:3]) <= 938:
        raise InvalidInputError(
            f"invalid DfE number {dfe_number!r}: expected 7 digits, a 3-digit LA code "
            "(201-938) then a 4-digit establishment number, e.g. 3024012"
        )
    return value


def register_school(
    repo: SchoolRepository, *, name: str, dfe_number: str, urn: str | None, now: datetime
) -> NewSchool:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInputError("school name must be 1-200 characters")
    dfe = validate_dfe_number(dfe_number)
    if urn is not None and not _URN_RE.match(urn.strip()):
        raise InvalidInputError(f"invalid URN {urn!r}: expected 6 digits, e.g. 100000")
    existing = repo.by_dfe_number(dfe)
    if existing is not None:
        raise ConflictError(
            f"a school with DfE number {dfe} is already registered ({existing.id})",
            school_id=existing.id,
        )
    school = School(
        id=new_id("sch"), name=name, dfe_number=dfe, urn=urn and urn.strip(), created_at=now
    )
    try:
        repo.add(school)
    except IntegrityError as exc:  # a concurrent registration of the same DfE number
        raise ConflictError(f"a school with DfE number {dfe} is already registered") from exc
    agent, agent_key = _new_agent(school.id, now)
    repo.add(agent)
    return NewSchool(school=school, agent_key=agent_key)


def _new_agent(school_id: str, now: datetime) -> tuple[Agent, str]:
    agent_key = generate_secret("mbk_agent")
    agent = Agent(
        id=new_id("agt"),
        school_id=school_id,
        key_hash=digest_secret(agent_key),
        key_hint=agent_key[:14],
        created_at=now,
    )
    return agent, agent_key


def issue_agent_key(
    repo: SchoolRepository, *, school_id: str, now: datetime, revoke_others: bool
) -> IssuedAgentKey:
    """A new key for a school's agent (a leaked key, a rebuilt server)."""
    school = require_school(repo, school_id)
    if school.status is not SchoolStatus.ACTIVE:
        raise ConflictError(f"school {school_id} is closed")
    if revoke_others:
        for old in repo.agents(school_id):
            if old.revoked_at is None:
                old.revoked_at = now
                repo.add(old)
    agent, agent_key = _new_agent(school_id, now)
    repo.add(agent)
    return IssuedAgentKey(agent=agent, agent_key=agent_key)


def require_school(repo: SchoolRepository, school_id: str) -> School:
    school = repo.get(school_id)
    if school is None:
        raise NotFoundError(f"no school {school_id!r}")
    return school


def add_admin(
    repo: SchoolRepository,
    sealer: SecretSealer,
    *,
    school_id: str,
    email: str,
    password: str,
    now: datetime,
) -> NewAdmin:
    school = require_school(repo, school_id)
    if school.status is not SchoolStatus.ACTIVE:
        raise ConflictError(f"school {school_id} is closed")
    email = normalise_email(email)
    problems = password_policy_problems(password, email)
    if problems:
        raise InvalidInputError("password too weak: it needs " + ", ".join(problems))
    totp_secret = pyotp.random_base32()
    existing = repo.admin_by_email(email)
    if existing is not None:
        if existing.disabled_at is None or existing.school_id != school.id:
            raise ConflictError(f"an admin with email {email} already exists")
        return _readmit(repo, sealer, existing, password, totp_secret)
    admin_id = new_id("adm")
    admin = SchoolAdmin(
        id=admin_id,
        school_id=school.id,
        email=email,
        password_hash=hash_password(password),
        totp_secret_sealed=sealer.seal(totp_secret.encode(), context=totp_context(admin_id)),
        created_at=now,
    )
    try:
        repo.add(admin)
    except IntegrityError as exc:
        raise ConflictError(f"an admin with email {email} already exists") from exc
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)
    return NewAdmin(admin=admin, totp_secret=totp_secret, otpauth_uri=uri)


def normalise_email(email: str) -> str:
    """An admin's email as stored (lower case, trimmed); refused if it is not one."""
    email = email.strip().lower()
    if not _EMAIL_RE.match(email):
        raise InvalidInputError(f"invalid email address {email!r}")
    return email


def _readmit(
    repo: SchoolRepository,
    sealer: SecretSealer,
    admin: SchoolAdmin,
    password: str,
    totp_secret: str,
) -> NewAdmin:
    """A removed admin added again: same id (their history stays theirs), everything else new.

    The old password, authenticator and recovery codes never work again: the admin enrols
    a new app at the next sign-in.
    """
    admin.password_hash = hash_password(password)
    admin.totp_secret_sealed = sealer.seal(totp_secret.encode(), context=totp_context(admin.id))
    admin.totp_last_step = None
    admin.totp_confirmed_at = None
    admin.disabled_at = None
    repo.add(admin)
    forget_recovery_codes(repo.session, admin.id)
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=admin.email, issuer_name=TOTP_ISSUER)
    return NewAdmin(admin=admin, totp_secret=totp_secret, otpauth_uri=uri)


def close_school(repo: SchoolRepository, *, school_id: str, now: datetime) -> School:
    """Close a school: its data stays readable to nobody new and is shredded after retention."""
    school = require_school(repo, school_id)
    if school.status is SchoolStatus.CLOSED:
        raise ConflictError(f"school {school_id} is already closed")
    school.status = SchoolStatus.CLOSED
    school.closed_at = now
    for agent in repo.agents(school_id):
        if agent.revoked_at is None:
            agent.revoked_at = now
    repo.add(school)
    return school
