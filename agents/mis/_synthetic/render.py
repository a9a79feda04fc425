"""Render the school's state as catalogue records, one function per data area.

Rendering is pure: it reads the state, draws no random numbers and returns fresh dicts
and lists, so callers may mutate what they get without touching the school.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from agents.mis._synthetic.calendar import school_days_until
from agents.mis._synthetic.model import Address, Contact, Pupil, World, year_label
from agents.mis._synthetic.structure import DAY_NAMES
from agents.mis._synthetic.tables import (
    A_LEVEL_SPECS,
    ENGLISH_CODES,
    GCSE_SPECS,
    LANGUAGES,
    RELIGIONS,
    SEN_NEEDS,
)
from agents.mis.attendance_codes import DFE_CODES
from agents.mis.base import Record
from agents.mis.jpeg import tiny_jpeg

Renderer = Callable[[World], Iterator[Record]]


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _address(address: Address) -> Record:
    return {
        "address_block": "\n".join(address.lines()),
        "address_line1": address.line1,
        "address_line2": address.locality,
        "address_line3": None,
        "town": address.town,
        "county": address.county,
        "postcode": address.postcode,
        "country": "United Kingdom",
    }


def _items(pairs: list[tuple[str, str]], key: str) -> list[dict[str, Any]]:
    return [{"type": kind, key: value, "primary": i == 0} for i, (kind, value) in enumerate(pairs)]


def _photo(world: World, owner_id: str) -> str:
    tag = f"misbroker synthetic photo {owner_id} seed {world.seed}".encode()
    grey = 48 + zlib.crc32(tag) % 160  # a stable, per-person shade
    return base64.b64encode(tiny_jpeg(grey, tag)).decode("ascii")


# --- school, groups, timetable ---------------------------------------------------------


def school_details(world: World) -> Iterator[Record]:
    school = world.school
    head = next((s for s in world.staff if "Headteacher" in s.roles), None)
    yield {
        "id": "school",
        "name": school.name,
        "dfe_number": school.dfe_number,
        "urn": school.urn,
        "exam_centre_number": school.centre,
        "local_authority": school.local_authority,
        "address": "\n".join(school.address.lines()),
        "postcode": school.address.postcode,
        "country": "England",
        "telephone": school.telephone,
        "email": f"office@{school.domain}",
        "headteacher": f"{head.title} {head.forename} {head.surname}" if head else None,
        "data_controller": school.data_controller,
    }


def groups(world: World) -> Iterator[Record]:
    start, end = date(world.year_start, 9, 1), date(world.year_start + 1, 8, 31)
    for group in sorted(world.groups.values(), key=lambda g: g.id):
        yield {
            "id": group.id,
            "name": group.name,
            "group_type": group.group_type,
            "year_group": None if group.year is None else year_label(group.year),
            "subject": group.subject,
            "staff_ids": list(group.staff),
            "student_ids": [f"stu-{n:06d}" for n in sorted(group.members)],
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
        }


def timetable(world: World) -> Iterator[Record]:
    for lesson in world.lessons:
        yield {
            "id": lesson.id,
            "period": lesson.period,
            "day_of_week": DAY_NAMES[lesson.period[:3]],
            "week": "A",
            "start_time": lesson.start,
            "end_time": lesson.end,
            "group_id": lesson.group_id,
            "subject": lesson.subject,
            "room": lesson.room,
            "staff_ids": [lesson.staff_id] if lesson.staff_id else [],
        }


# --- students --------------------------------------------------------------------------


def students_basic(world: World) -> Iterator[Record]:
    for p in world.pupils.values():
        yield {
            "id": p.id,
            "upn": p.upn,
            "admission_number": p.admission_number,
            "forename": p.preferred_name or p.legal_forename,
            "surname": p.surname,
            "legal_forename": p.legal_forename,
            "legal_surname": p.legal_surname,
            "middle_name": p.middle_name,
            "preferred_name": p.preferred_name,
            "date_of_birth": p.dob.isoformat(),
            "gender": p.gender,
            "year_group": year_label(p.year),
            "registration_group": p.form,
            "house": p.house,
            "on_roll": p.on_roll,
            "entry_date": p.entry.isoformat(),
            "leaving_date": _iso(p.leaving),
            "uln": p.uln,
            "exam_number": p.candidate,
        }


def students_contact_details(world: World) -> Iterator[Record]:
    for p in world.pupils.values():
        phones = [("home", p.family.home_phone)] if p.family.home_phone else []
        if p.mobile:
            phones.append(("mobile", p.mobile))
        emails = [("other", p.school_email)] if p.school_email else []
        yield {
            "id": p.id,
            **_address(p.family.address),
            "phones": _items(phones, "number"),
            "emails": _items(emails, "address"),
        }


def students_demographics(world: World) -> Iterator[Record]:
    for p in world.pupils.values():
        family = p.family
        fsm6 = family.fsm or family.fsm_past
        yield {
            "id": p.id,
            "ethnicity": family.ethnicity.description,
            "ethnicity_code": family.ethnicity.code,
            "religion": RELIGIONS[family.religion],
            "religion_code": family.religion,
            "first_language": LANGUAGES[family.language],
            "first_language_code": family.language,
            "eal": family.language not in ENGLISH_CODES,
            "fsm_eligible": family.fsm,
            "fsm_end_date": _iso(family.fsm_end) if family.fsm else None,
            "ufsm": world.phase == "primary" and p.year <= 2 and not family.fsm,
            "fsm6": fsm6,
            "pupil_premium": fsm6 or p.looked_after,
            "looked_after": p.looked_after,
            "service_child": family.service,
            "gifted": p.gifted,
            "traveller": family.ethnicity.traveller,
        }


def students_sen(world: World) -> Iterator[Record]:
    for p in world.pupils.values():
        yield {
            "id": p.id,
            "sen_status": p.sen_status,
            "sen_provisions": [
                {"status": status, "start_date": _iso(start), "end_date": _iso(end)}
                for status, start, end in p.sen_history
            ],
            "sen_needs": [
                {"type": need, "description": SEN_NEEDS[need], "ranking": rank}
                for rank, need in enumerate(p.sen_needs, start=1)
            ],
        }


def _percent(n: int, possible: int) -> float | None:
    return round(100 * n / possible, 1) if possible else None


def students_attendance_summary(world: World) -> Iterator[Record]:
    days = school_days_until(world.day)
    for p in world.pupils.values():
        t = p.tally
        first = max(p.entry, days[0]) if days else None
        last = min(p.leaving or days[-1], days[-1]) if days else None
        yield {
            "id": p.id,
            "period_start": _iso(first),
            "period_end": _iso(last),
            "possible_marks": t.possible,
            "present_marks": t.present,
            "aea_marks": t.aea,
            "authorised_absence_marks": t.authorised,
            "unauthorised_absence_marks": t.unauthorised,
            "missing_marks": t.missing,
            "late_marks": t.late,
            "attendance_percent": _percent(t.present + t.aea, t.possible),
            "authorised_absence_percent": _percent(t.authorised, t.possible),
            "unauthorised_absence_percent": _percent(t.unauthorised, t.possible),
        }


def students_photos(world: World) -> Iterator[Record]:
    for p in world.on_roll():
        photo = _photo(world, p.id) if p.has_photo else None
        yield {"id": p.id, "photo": photo, "photo_available": p.has_photo}


# --- contacts and staff ----------------------------------------------------------------


def contacts(world: World) -> Iterator[Record]:
    """Contacts of pupils on roll; a contact's top-level link is its first pupil's."""
    for family in world.families:
        current = [p for p in family.pupils if p.on_roll]
        for contact in family.contacts:
            links = _links_to(contact, current)
            if links:
                yield _contact(contact, links)


def _links_to(contact: Contact, pupils: list[Pupil]) -> list[dict[str, Any]]:
    out = []
    for pupil in pupils:
        for priority, link in enumerate(pupil.links, start=1):
            if link.contact is contact:
                out.append(
                    {
                        "student_id": pupil.id,
                        "relationship": link.relationship,
                        "priority": priority,
                        "parental_responsibility": link.parental_responsibility,
                    }
                )
    return sorted(out, key=lambda x: str(x["student_id"]))


def _contact(contact: Contact, links: list[dict[str, Any]]) -> Record:
    first = links[0]
    return {
        "id": contact.id,
        "title": contact.title,
        "forename": contact.forename,
        "surname": contact.surname,
        "relationship": first["relationship"],
        "priority": first["priority"],
        "parental_responsibility": first["parental_responsibility"],
        **_address(contact.address),
        "phones": _items(contact.phones, "number"),
        "emails": _items(contact.emails, "address"),
        "student_ids": [x["student_id"] for x in links],
        "student_links": links,
    }


def staff_basic(world: World) -> Iterator[Record]:
    for s in world.staff:
        yield {
            "id": s.id,
            "title": s.title,
            "forename": s.forename,
            "surname": s.surname,
            "legal_forename": s.forename,
            "legal_surname": s.surname,
            "staff_code": s.code,
            "roles": list(s.roles),
            "work_email": s.email,
            "work_phone": s.phone,
            # Ofcom's range for drama (07700 900000-900999): never a real person's mobile.
            "mobile_phone": f"07700 900{s.num % 1000:03d}",
            "middle_name": None,  # most MISs hold none for staff
            "group_ids": sorted(s.groups),
        }


def staff_personal(world: World) -> Iterator[Record]:
    for s in world.staff:
        yield {
            "id": s.id,
            "date_of_birth": s.dob.isoformat(),
            "gender": s.gender,
            **_address(s.address),
            "employment_start": s.start.isoformat(),
            "employment_end": None,
        }


def staff_photos(world: World) -> Iterator[Record]:
    for s in world.staff:
        if s.has_photo:
            yield {"id": s.id, "photo": _photo(world, s.id)}


# --- attendance, behaviour, exams ------------------------------------------------------


def attendance_codes(world: World) -> Iterator[Record]:
    for code in DFE_CODES:
        yield {
            "id": code.record_id,
            "mark": code.mark,
            "description": code.description,
            "meaning": code.meaning,
            "physical_meaning": code.physical_meaning,
        }


def attendance_marks(world: World) -> Iterator[Record]:
    for day in sorted(world.marks):
        stamp = day.strftime("%Y%m%d")
        for m in world.marks[day]:
            yield {
                "id": f"att-{m.pupil:06d}-{stamp}-{m.session.lower()}",
                "student_id": f"stu-{m.pupil:06d}",
                "date": day.isoformat(),
                "session": m.session,
                "mark": m.mark,
                "minutes_late": m.minutes_late,
            }


def behaviour(world: World) -> Iterator[Record]:
    for e in world.behaviour:
        yield {
            "id": e.id,
            "student_id": f"stu-{e.pupil:06d}",
            "type": e.kind,
            "date": e.day.isoformat(),
            "description": e.description,
            "outcome": e.outcome,
            "recorded_by": e.recorded_by,
            "points": e.points,
        }


def exams(world: World) -> Iterator[Record]:
    """Candidates in the two exam years, with this summer's entries."""
    for p in world.on_roll():
        if p.year in (11, 13) and p.candidate:
            yield {
                "id": f"exm-{p.num:06d}",
                "student_id": p.id,
                "candidate_number": p.candidate,
                "uci": p.uci,
                "entries": _entries(world, p),
            }


def _entries(world: World, pupil: Pupil) -> list[dict[str, Any]]:
    series = f"June {world.year_start + 1}"
    options = [g.code for gid in pupil.groups if (g := world.groups.get(gid)) and g.block]
    tier = "H" if pupil.ability > -0.2 else "F"
    out: list[dict[str, Any]] = []
    if pupil.year == 11:
        for code in ["En", "Ma", "Sc", "Re", *options]:
            for spec in GCSE_SPECS.get(code or "", ()):
                entry = spec.code + (tier if spec.tiered else "")
                out.append(_entry(series, spec.awarding_body, "GCSE", spec.title, entry))
    else:
        for code in options:
            spec = A_LEVEL_SPECS[code or ""]
            out.append(_entry(series, spec.awarding_body, "GCE A Level", spec.title, spec.code))
    return out


def _entry(series: str, body: str, qualification: str, subject: str, code: str) -> dict[str, Any]:
    return {
        "series": series,
        "awarding_body": body,
        "qualification": qualification,
        "subject": subject,
        "entry_code": code,
    }


RENDERERS: dict[str, Renderer] = {
    "school.details": school_details,
    "groups": groups,
    "timetable": timetable,
    "students.basic": students_basic,
    "students.contact_details": students_contact_details,
    "students.demographics": students_demographics,
    "students.sen": students_sen,
    "students.attendance_summary": students_attendance_summary,
    "students.photos": students_photos,
    "contacts": contacts,
    "staff.basic": staff_basic,
    "staff.personal": staff_personal,
    "staff.photos": staff_photos,
    "attendance.codes": attendance_codes,
    "attendance.marks": attendance_marks,
    "behaviour": behaviour,
    "exams": exams,
}
