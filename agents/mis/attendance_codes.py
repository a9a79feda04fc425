"""The DfE national attendance register codes, current (August 2024) and legacy.

Legacy codes (H, J, Y) stay in the set because an MIS keeps them for historic marks, and
a partner reading last year's registers still needs their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class AttendanceCode:
    mark: str
    description: str
    meaning: str  # one of the `meaning` choices of attendance.codes
    physical_meaning: str | None  # in_school / out_of_school; None when unknown

    @property
    def record_id(self) -> str:
        # Marks such as "/" and "#" are not valid record ids, so ids name the code.
        return "code-" + _MARK_NAMES.get(self.mark, self.mark)


_MARK_NAMES: Final = {"/": "present-am", "\\": "present-pm", "#": "closed", "-": "no-mark"}

_IN, _OUT = "in_school", "out_of_school"
_P, _AEA, _AUTH, _UNAUTH = "present", "aea", "authorised_absence", "unauthorised_absence"
_NR, _NONE = "not_required", "no_mark"

DFE_CODES: Final[tuple[AttendanceCode, ...]] = (
    AttendanceCode("/", "Present (AM)", _P, _IN),
    AttendanceCode("\\", "Present (PM)", _P, _IN),
    AttendanceCode("L", "Late arrival before the register closed", _P, _IN),
    AttendanceCode(
        "K", "Attending education provision arranged by the local authority", _AEA, _OUT
    ),
    AttendanceCode("V", "Attending an educational visit or trip", _AEA, _OUT),
    AttendanceCode("P", "Participating in a supervised sporting activity", _AEA, _OUT),
    AttendanceCode("W", "Attending work experience", _AEA, _OUT),
    AttendanceCode("B", "Attending any other approved educational activity", _AEA, _OUT),
    AttendanceCode("D", "Dual registered: attending another school", _NR, _OUT),
    AttendanceCode(
        "C1", "Leave of absence: regulated performance or employment abroad", _AUTH, _OUT
    ),
    AttendanceCode("M", "Leave of absence: medical or dental appointment", _AUTH, _OUT),
    AttendanceCode("J1", "Leave of absence: interview for employment or education", _AUTH, _OUT),
    AttendanceCode("S", "Leave of absence: study for a public examination", _AUTH, _OUT),
    AttendanceCode("X", "Non-compulsory school age pupil not required to attend", _NR, _OUT),
    AttendanceCode("C2", "Leave of absence: part-time timetable", _AUTH, _OUT),
    AttendanceCode("C", "Leave of absence: exceptional circumstances", _AUTH, _OUT),
    AttendanceCode("T", "Parent travelling for occupational purposes", _AUTH, _OUT),
    AttendanceCode("R", "Religious observance", _AUTH, _OUT),
    AttendanceCode("I", "Illness (not medical or dental appointment)", _AUTH, _OUT),
    AttendanceCode("E", "Suspended or permanently excluded, no alternative provision", _AUTH, _OUT),
    AttendanceCode("Q", "Unable to attend: lack of access arrangements", _NR, _OUT),
    AttendanceCode("Y1", "Unable to attend: transport normally provided not available", _NR, _OUT),
    AttendanceCode("Y2", "Unable to attend: widespread disruption to travel", _NR, _OUT),
    AttendanceCode("Y3", "Unable to attend: part of the school premises closed", _NR, _OUT),
    AttendanceCode("Y4", "Unable to attend: whole school site unexpectedly closed", _NR, _OUT),
    AttendanceCode("Y5", "Unable to attend: criminal justice detention", _NR, _OUT),
    AttendanceCode("Y6", "Unable to attend: public health guidance or law", _NR, _OUT),
    AttendanceCode("Y7", "Unable to attend: any other unavoidable cause", _NR, _OUT),
    AttendanceCode("G", "Holiday not authorised by the school", _UNAUTH, _OUT),
    AttendanceCode("N", "Reason for absence not yet provided", _UNAUTH, _OUT),
    AttendanceCode("O", "Absent in other or unknown circumstances", _UNAUTH, _OUT),
    AttendanceCode("U", "Arrived after the register closed", _UNAUTH, _IN),
    AttendanceCode("Z", "Prospective pupil not on the admission register", _NR, _OUT),
    AttendanceCode("#", "Planned whole-school closure", _NR, _OUT),
    AttendanceCode("H", "Legacy (before 2024): holiday authorised by the school", _AUTH, _OUT),
    AttendanceCode("J", "Legacy (before 2024): interview", _AEA, _OUT),
    AttendanceCode(
        "Y", "Legacy (before 2024): unable to attend, exceptional circumstances", _NR, _OUT
    ),
    AttendanceCode("-", "No mark recorded yet", _NONE, None),
)

CODES_BY_MARK: Final = {code.mark: code for code in DFE_CODES}
