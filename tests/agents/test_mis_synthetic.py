"""The synthetic MIS: every area is catalogue-shaped and the school is a plausible one."""

import base64
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date
from typing import Any

import pytest

from agents.mis import AdapterError, MisAdapter
from agents.mis._synthetic.calendar import school_days_until
from agents.mis.identifiers import is_valid_uln, is_valid_upn, uci_check_character
from agents.mis.synthetic import Phase, SyntheticMis
from consent.areas import CATALOGUE, validate_record

DAY = date(2025, 11, 19)  # a Wednesday in the autumn term
SIZES = {"primary": 200, "secondary": 1200}
Rec = dict[str, Any]


@pytest.fixture(scope="module", params=["primary", "secondary"])
def school(request: pytest.FixtureRequest) -> SyntheticMis:
    phase = request.param
    return SyntheticMis(seed=11, pupils=SIZES[phase], phase=phase, day=DAY)


@pytest.fixture(scope="module")
def secondary() -> SyntheticMis:
    return SyntheticMis(seed=12, pupils=SIZES["secondary"], phase="secondary", day=DAY)


def records(mis: SyntheticMis, area: str) -> list[Rec]:
    return list(mis.extract(area))


def phase_of(mis: SyntheticMis) -> str:
    years = {r["year_group"] for r in records(mis, "students.basic")}
    return "primary" if "Reception" in years else "secondary"


def on_roll(mis: SyntheticMis) -> list[Rec]:
    return [r for r in records(mis, "students.basic") if r["on_roll"]]


# --- the port --------------------------------------------------------------------------


def test_it_is_a_mis_adapter_for_the_whole_catalogue(school: SyntheticMis) -> None:
    assert isinstance(school, MisAdapter)
    assert school.name == "synthetic"
    assert school.areas() == frozenset(CATALOGUE)


def test_every_record_of_every_area_passes_catalogue_validation(school: SyntheticMis) -> None:
    for name in sorted(school.areas()):
        area = CATALOGUE[name]
        recs = records(school, name)
        if name == "exams" and phase_of(school) == "primary":
            assert recs == []  # no public exams in a primary
            continue
        assert recs, name
        problems = [e for i, r in enumerate(recs) for e in validate_record(area, i, r)]
        assert problems == [], (name, problems[:3])
        ids = [r["id"] for r in recs]
        assert len(set(ids)) == len(ids), f"duplicate ids in {name}"


def test_records_carry_every_catalogue_field(school: SyntheticMis) -> None:
    # Absent and null differ for a delta: an adapter must say "null", not leave it out.
    for name in sorted(school.areas()):
        expected = {"id", *CATALOGUE[name].field_names}
        for rec in records(school, name)[:50]:
            assert set(rec) == expected, name


def test_unknown_areas_raise_adapter_error(school: SyntheticMis) -> None:
    with pytest.raises(AdapterError, match="not in the catalogue"):
        school.extract("students.shoe_size")


def test_extracted_records_are_copies(school: SyntheticMis) -> None:
    first = records(school, "groups")[0]
    first["student_ids"].append("stu-999999")
    assert "stu-999999" not in records(school, "groups")[0]["student_ids"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phase": "nursery"}, "phase"),
        ({"pupils": 0}, "pupils"),
        ({"dfe_number": "30240"}, "7 digits"),
        ({"marks_days": -1}, "marks_days"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"seed": 1, "pupils": 10, "phase": "primary", "day": DAY} | kwargs
    with pytest.raises(ValueError, match=message):
        SyntheticMis(**args)


def test_the_agent_package_imports_without_server_dependencies() -> None:
    code = (
        "import sys, agents, agents.mis, agents.mis.synthetic\n"
        "server = {'pydantic', 'fastapi', 'sqlalchemy', 'cryptography', 'sqlmodel', 'redis'}\n"
        "print(sorted(server & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- pupils ----------------------------------------------------------------------------


def test_pupils_on_roll_equal_the_requested_roll(school: SyntheticMis) -> None:
    assert len(on_roll(school)) == SIZES[phase_of(school)]


def test_leavers_are_off_roll_with_a_leaving_date(secondary: SyntheticMis) -> None:
    leavers = [r for r in records(secondary, "students.basic") if not r["on_roll"]]
    assert leavers
    assert all(r["leaving_date"] and r["leaving_date"] < DAY.isoformat() for r in leavers)
    assert all(r["leaving_date"] is None for r in on_roll(secondary))


def test_upns_are_valid_and_unique(school: SyntheticMis) -> None:
    upns = [r["upn"] for r in records(school, "students.basic")]
    assert all(is_valid_upn(u) for u in upns)
    assert len(set(upns)) == len(upns)


def test_dfe_number_is_used_for_the_school_and_its_own_upns() -> None:
    mis = SyntheticMis(seed=5, pupils=120, phase="primary", dfe_number="3022012", day=DAY)
    (details,) = records(mis, "school.details")
    assert details["dfe_number"] == "3022012"
    assert details["local_authority"] == "Barnet"
    upns = [r["upn"] for r in records(mis, "students.basic")]
    # Pupils who started in Reception here got their UPN from this school.
    assert sum(u[1:8] == "3022012" for u in upns) > len(upns) / 2


def test_year_groups_and_forms_fit_the_phase(school: SyntheticMis) -> None:
    pupils = on_roll(school)
    years = Counter(r["year_group"] for r in pupils)
    if phase_of(school) == "primary":
        assert set(years) == {"Reception", *(f"Year {n}" for n in range(1, 7))}
    else:
        assert set(years) == {f"Year {n}" for n in range(7, 14)}
        assert years["Year 12"] < years["Year 11"] * 0.7  # a smaller sixth form
    for r in pupils:
        prefix = "R" if r["year_group"] == "Reception" else r["year_group"].split()[1]
        assert r["registration_group"].startswith(prefix)
        assert r["registration_group"][len(prefix) :].isalpha()
    assert max(Counter(r["registration_group"] for r in pupils).values()) <= 30


def test_dates_of_birth_fit_the_year_group(school: SyntheticMis) -> None:
    for r in records(school, "students.basic"):
        label = r["year_group"]
        n = 0 if label == "Reception" else int(label.split()[1])
        born = 2025 - n - 5  # Year n in 2025/26 was born Sep (2020 - n) to Aug (2021 - n)
        assert (
            date(born, 9, 1).isoformat() <= r["date_of_birth"] <= date(born + 1, 8, 31).isoformat()
        )


def test_names_genders_and_optional_names_vary(school: SyntheticMis) -> None:
    pupils = records(school, "students.basic")
    assert {r["gender"] for r in pupils} == {"M", "F"}
    assert len({r["surname"] for r in pupils}) > 40
    assert any(r["middle_name"] for r in pupils)
    assert any(r["middle_name"] is None for r in pupils)
    preferred = [r for r in pupils if r["preferred_name"]]
    assert preferred
    assert all(r["forename"] == r["preferred_name"] for r in preferred)


def test_exam_identifiers_only_from_year_10(secondary: SyntheticMis) -> None:
    pupils = on_roll(secondary)
    for r in pupils:
        senior = int(r["year_group"].split()[1]) >= 10
        assert (r["uln"] is not None) == senior
        assert (r["exam_number"] is not None) == senior
    ulns = [r["uln"] for r in pupils if r["uln"]]
    assert all(len(u) == 10 and is_valid_uln(u) for u in ulns)
    assert len(set(ulns)) == len(ulns)


def test_demographics_use_dfe_codes_at_plausible_rates(secondary: SyntheticMis) -> None:
    demo = records(secondary, "students.demographics")
    codes = Counter(r["ethnicity_code"] for r in demo)
    assert codes.most_common(1)[0][0] == "WBRI"
    assert len(codes) >= 8
    assert {r["first_language_code"] for r in demo} >= {"ENG"}
    assert all(r["eal"] == (r["first_language_code"] not in ("ENG", "ENB")) for r in demo)
    fsm = sum(r["fsm_eligible"] for r in demo) / len(demo)
    assert 0.15 < fsm < 0.33
    assert all(r["fsm6"] for r in demo if r["fsm_eligible"])
    assert all(r["pupil_premium"] for r in demo if r["fsm6"] or r["looked_after"])


def test_sen_rates_and_needs(secondary: SyntheticMis) -> None:
    sen = records(secondary, "students.sen")
    status = Counter(r["sen_status"] for r in sen)
    assert 0.10 < status["K"] / len(sen) < 0.20
    assert 0.01 < status["E"] / len(sen) < 0.06
    for r in sen:
        assert bool(r["sen_needs"]) == (r["sen_status"] != "N")
        assert [n["ranking"] for n in r["sen_needs"]] == list(range(1, len(r["sen_needs"]) + 1))
        current = [p["status"] for p in r["sen_provisions"] if p["end_date"] is None]
        assert current == ([] if r["sen_status"] == "N" else [r["sen_status"]])


def test_contact_details_have_uk_postcodes_and_drama_phone_numbers(school: SyntheticMis) -> None:
    details = records(school, "students.contact_details") + records(school, "contacts")
    for r in details:
        outward, inward = r["postcode"].split(" ")
        assert outward[0].isalpha()
        assert outward[-1].isdigit()
        assert len(inward) == 3
        assert inward[0].isdigit()
        assert inward[1:].isalpha()
        assert r["address_block"].splitlines()[0] == r["address_line1"]
        for phone in r["phones"]:
            number = phone["number"].replace(" ", "")
            assert number.startswith(("07700900", "01", "02"))
        for email in r["emails"]:
            assert (
                email["address"]
                .split("@")[1]
                .endswith(("example.com", "example.net", "example.org"))
            )


# --- contacts and siblings -------------------------------------------------------------


def test_siblings_share_contacts_and_a_home(school: SyntheticMis) -> None:
    contacts = records(school, "contacts")
    addresses = {r["id"]: r["address_block"] for r in records(school, "students.contact_details")}
    shared = [c for c in contacts if len(c["student_ids"]) > 1]
    assert shared
    for c in shared:
        assert len({addresses[s] for s in c["student_ids"]}) == 1
    with_sibling = {s for c in shared for s in c["student_ids"]}
    assert 0.2 < len(with_sibling) / len(on_roll(school)) < 0.4


def test_contact_links_agree_with_the_top_level_fields(school: SyntheticMis) -> None:
    current = {r["id"] for r in on_roll(school)}
    for c in records(school, "contacts"):
        links = c["student_links"]
        assert [x["student_id"] for x in links] == c["student_ids"]
        assert set(c["student_ids"]) <= current
        first = links[0]
        assert (c["relationship"], c["priority"], c["parental_responsibility"]) == (
            first["relationship"],
            first["priority"],
            first["parental_responsibility"],
        )


def test_every_pupil_has_contact_priorities_one_to_n(school: SyntheticMis) -> None:
    priorities: dict[str, list[int]] = defaultdict(list)
    for c in records(school, "contacts"):
        for link in c["student_links"]:
            priorities[link["student_id"]].append(link["priority"])
    assert set(priorities) == {r["id"] for r in on_roll(school)}
    for ranks in priorities.values():
        assert sorted(ranks) == list(range(1, len(ranks) + 1))


def test_most_pupils_have_a_parent_with_parental_responsibility(school: SyntheticMis) -> None:
    pr: dict[str, bool] = defaultdict(bool)
    for c in records(school, "contacts"):
        for link in c["student_links"]:
            pr[link["student_id"]] |= link["parental_responsibility"]
    assert sum(pr.values()) / len(pr) > 0.95


def test_some_siblings_rank_a_shared_contact_differently(secondary: SyntheticMis) -> None:
    differing = [
        c
        for c in records(secondary, "contacts")
        if len({(x["priority"], x["relationship"]) for x in c["student_links"]}) > 1
    ]
    assert differing
    assert any(
        {x["relationship"] for x in c["student_links"]} == {"Father", "Step-father"}
        for c in differing
    )


# --- staff, groups, timetable ----------------------------------------------------------


def test_staff_numbers_roles_and_codes(school: SyntheticMis) -> None:
    staff = records(school, "staff.basic")
    teachers = [s for s in staff if "Teacher" in s["roles"]]
    pupils = SIZES[phase_of(school)]
    assert 0.8 * pupils / 16 <= len(teachers) + 1 <= 1.25 * pupils / 16
    assert len(staff) > len(teachers) + 1  # support staff too
    assert sum("Headteacher" in s["roles"] for s in staff) == 1
    codes = [s["staff_code"] for s in staff]
    assert len(set(codes)) == len(codes)
    emails = [s["work_email"] for s in staff]
    assert len(set(emails)) == len(emails)
    personal = {r["id"]: r for r in records(school, "staff.personal")}
    assert set(personal) == {s["id"] for s in staff}
    assert all(personal[s["id"]]["date_of_birth"] < "2004-01-01" for s in staff)


def test_primary_has_no_teaching_groups_and_secondary_does(school: SyntheticMis) -> None:
    groups = records(school, "groups")
    kinds = Counter(g["group_type"] for g in groups)
    if phase_of(school) == "primary":
        assert kinds["teaching"] == 0
    else:
        assert kinds["teaching"] > 100
        teaching = [g for g in groups if g["group_type"] == "teaching"]
        assert all(g["subject"] and "/" in g["name"] for g in teaching)
    assert kinds["year"] == 7
    assert kinds["house"] == 4


def test_pastoral_groups_match_the_pupils(school: SyntheticMis) -> None:
    pupils = on_roll(school)
    for g in records(school, "groups"):
        if g["group_type"] == "registration":
            expected = {r["id"] for r in pupils if r["registration_group"] == g["name"]}
        elif g["group_type"] == "year":
            expected = {r["id"] for r in pupils if r["year_group"] == g["name"]}
        elif g["group_type"] == "house":
            expected = {r["id"] for r in pupils if r["house"] == g["name"]}
        else:
            continue
        assert set(g["student_ids"]) == expected, g["name"]
        assert g["staff_ids"], g["name"]


def test_staff_and_groups_point_at_each_other(school: SyntheticMis) -> None:
    staff = {s["id"]: set(s["group_ids"]) for s in records(school, "staff.basic")}
    for g in records(school, "groups"):
        for staff_id in g["staff_ids"]:
            assert g["id"] in staff[staff_id]


def test_timetable_never_double_books_anyone(school: SyntheticMis) -> None:
    lessons = records(school, "timetable")
    groups = {g["id"]: g for g in records(school, "groups")}
    assert {x["day_of_week"] for x in lessons} == {
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
    }
    staff_slots = Counter((s, x["period"]) for x in lessons for s in x["staff_ids"])
    room_slots = Counter((x["room"], x["period"]) for x in lessons)
    pupil_slots = Counter(
        (p, x["period"]) for x in lessons for p in groups[x["group_id"]]["student_ids"]
    )
    assert max(staff_slots.values()) == 1
    assert max(room_slots.values()) == 1
    assert max(pupil_slots.values()) == 1
    taught = "registration" if phase_of(school) == "primary" else "teaching"
    assert {groups[x["group_id"]]["group_type"] for x in lessons} == {taught}
    assert all(x["start_time"] < x["end_time"] for x in lessons)


def test_main_school_pupils_have_a_full_week(secondary: SyntheticMis) -> None:
    lessons = records(secondary, "timetable")
    members = {g["id"]: g["student_ids"] for g in records(secondary, "groups")}
    periods = Counter(p for x in lessons for p in members[x["group_id"]])
    years = {r["id"]: r["year_group"] for r in on_roll(secondary)}
    for pupil, year in years.items():
        assert periods[pupil] == (15 if year in ("Year 12", "Year 13") else 25), year


# --- attendance, behaviour, exams, photos ----------------------------------------------


def test_attendance_codes_are_the_full_dfe_set(school: SyntheticMis) -> None:
    marks = {r["mark"] for r in records(school, "attendance.codes")}
    assert marks >= set("/\\BCDEGIJLMNOPRSTUVWXYZ#") | {"C1", "C2", "J1", "K", "Q", "Y1", "Y7"}
    meaning = {r["mark"]: r["meaning"] for r in records(school, "attendance.codes")}
    assert meaning["/"] == "present"
    assert meaning["L"] == "present"
    assert meaning["I"] == "authorised_absence"
    assert meaning["O"] == "unauthorised_absence"
    assert meaning["V"] == "aea"
    assert meaning["X"] == "not_required"


def test_marks_cover_the_last_five_school_days_for_every_pupil(school: SyntheticMis) -> None:
    marks = records(school, "attendance.marks")
    window = [d.isoformat() for d in school_days_until(DAY)[-5:]]
    assert sorted({m["date"] for m in marks}) == window
    per_pupil = Counter(m["student_id"] for m in marks)
    entered = {r["id"]: r["entry_date"] for r in on_roll(school)}
    for pupil, entry in entered.items():
        assert per_pupil[pupil] == 2 * sum(d >= entry for d in window)
    known = {r["mark"] for r in records(school, "attendance.codes")}
    assert {m["mark"] for m in marks} <= known
    present = sum(m["mark"] in ("/", "\\", "L") for m in marks) / len(marks)
    assert 0.9 < present < 0.975


def test_late_marks_carry_minutes(school: SyntheticMis) -> None:
    for m in records(school, "attendance.marks"):
        assert (m["minutes_late"] is not None) == (m["mark"] in ("L", "U"))


def test_attendance_summary_adds_up(school: SyntheticMis) -> None:
    for r in records(school, "students.attendance_summary"):
        parts = (
            r["present_marks"]
            + r["aea_marks"]
            + r["authorised_absence_marks"]
            + r["unauthorised_absence_marks"]
            + r["missing_marks"]
        )
        assert parts == r["possible_marks"]
        if r["possible_marks"]:
            expected = round(100 * (r["present_marks"] + r["aea_marks"]) / r["possible_marks"], 1)
            assert r["attendance_percent"] == expected
    rates = [r["attendance_percent"] for r in records(school, "students.attendance_summary")]
    mean = sum(rates) / len(rates)
    assert 91 < mean < 97


def test_behaviour_is_recorded_by_staff_about_pupils(school: SyntheticMis) -> None:
    events = records(school, "behaviour")
    pupils = {r["id"] for r in records(school, "students.basic")}
    staff = {r["id"] for r in records(school, "staff.basic")}
    assert len(events) > SIZES[phase_of(school)]
    assert all(e["student_id"] in pupils and e["recorded_by"] in staff for e in events)
    assert any(e["points"] < 0 for e in events)
    assert any(e["points"] > 0 for e in events)
    assert all(e["date"] <= DAY.isoformat() for e in events)


def test_exams_are_for_years_11_and_13(secondary: SyntheticMis) -> None:
    years = {r["id"]: r["year_group"] for r in on_roll(secondary)}
    exams = records(secondary, "exams")
    assert {years[e["student_id"]] for e in exams} == {"Year 11", "Year 13"}
    assert len(exams) == sum(y in ("Year 11", "Year 13") for y in years.values())
    numbers = [e["candidate_number"] for e in exams]
    assert len(set(numbers)) == len(numbers)
    assert all(len(n) == 4 and n.isdigit() for n in numbers)
    for e in exams:
        assert e["uci"][-1] == uci_check_character(e["uci"][:12])
        quals = {x["qualification"] for x in e["entries"]}
        if years[e["student_id"]] == "Year 11":
            assert quals == {"GCSE"}
            assert len(e["entries"]) >= 8
        else:
            assert quals == {"GCE A Level"}
            assert len(e["entries"]) == 3
        assert {x["series"] for x in e["entries"]} == {"June 2026"}


def test_photos_are_small_jpegs(school: SyntheticMis) -> None:
    photos = records(school, "students.photos")
    assert {p["id"] for p in photos} == {r["id"] for r in on_roll(school)}
    assert any(not p["photo_available"] for p in photos)
    for p in photos:
        assert (p["photo"] is not None) == p["photo_available"]
        if p["photo"]:
            data = base64.b64decode(p["photo"])
            assert data.startswith(b"\xff\xd8")
            assert data.endswith(b"\xff\xd9")
            assert len(data) < 1024
    staff_photos = [base64.b64decode(p["photo"]) for p in records(school, "staff.photos")]
    assert staff_photos
    assert len(set(staff_photos)) == len(staff_photos)


def test_school_details(school: SyntheticMis) -> None:
    (details,) = records(school, "school.details")
    assert details["id"] == "school"
    assert len(details["dfe_number"]) == 7
    assert details["dfe_number"].isdigit()
    assert len(details["urn"]) == 6
    head = next(s for s in records(school, "staff.basic") if "Headteacher" in s["roles"])
    assert details["headteacher"] == f"{head['title']} {head['forename']} {head['surname']}"
    if phase_of(school) == "primary":
        assert details["exam_centre_number"] is None
    else:
        assert len(details["exam_centre_number"]) == 5


@pytest.mark.parametrize(
    ("seed", "pupils", "phase", "day"),
    [
        (1, 1, "primary", DAY),
        (2, 3, "secondary", DAY),
        (3, 17, "secondary", date(2025, 9, 1)),  # before the first day of term
        (4, 40, "primary", date(2025, 9, 3)),  # the first day of term
        (5, 64, "secondary", date(2026, 7, 21)),  # the last day of the year
        (6, 90, "primary", date(2026, 8, 15)),  # the summer holiday
        (7, 150, "secondary", date(2024, 2, 29)),  # a leap day
    ],
)
def test_small_and_odd_schools_still_validate(
    seed: int, pupils: int, phase: Phase, day: date
) -> None:
    mis = SyntheticMis(seed=seed, pupils=pupils, phase=phase, day=day)
    assert len(on_roll(mis)) == pupils
    for _ in range(2):
        for name in sorted(mis.areas()):
            for i, rec in enumerate(mis.extract(name)):
                assert list(validate_record(CATALOGUE[name], i, rec)) == [], name
        if mis.day < date(2026, 8, 29):
            mis.advance(2)


def test_a_given_school_name_is_used() -> None:
    mis = SyntheticMis(seed=5, pupils=30, phase="primary", school_name="St Mary's Primary", day=DAY)
    (details,) = records(mis, "school.details")
    assert details["name"] == "St Mary's Primary"
    assert details["email"] == "office@stmarysprimary.example.org"
