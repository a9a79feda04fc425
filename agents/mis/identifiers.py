"""Check characters of the identifiers English schools hold: UPN, ULN and UCI.

Adapters use them to generate (synthetic) or sanity-check (real MIS) identifiers; the
algorithms are the published DfE, ESFA and JCQ ones.
"""

from __future__ import annotations

from typing import Final

# DfE: 23 letters, I O S dropped so a check letter is never read as a digit.
UPN_CHECK_LETTERS: Final = "ABCDEFGHJKLMNPQRTUVWXYZ"
# JCQ: remainder of the weighted sum modulo 17 indexes this table.
UCI_CHECK_LETTERS: Final = "ABCDEFGHKLMRTVWXY"


def upn_check_letter(body12: str) -> str:
    """The DfE check letter for the 12 characters that follow it in a UPN.

    Characters 2..13 of the UPN are weighted 2..13; the sum modulo 23 picks the letter.
    """
    if len(body12) != 12 or not body12.isascii() or not body12.isdigit():
        raise ValueError("a permanent UPN body is 12 digits")
    total = sum(int(ch) * weight for weight, ch in enumerate(body12, start=2))
    return UPN_CHECK_LETTERS[total % 23]


def is_valid_upn(upn: str) -> bool:
    """True for a 13-character permanent UPN whose check letter matches its digits."""
    if len(upn) != 13 or not upn[1:].isascii() or not upn[1:].isdigit():
        return False
    return upn[0] == upn_check_letter(upn[1:])


def make_upn(la_code: int, establishment: int, year: int, serial: int) -> str:
    """A permanent UPN: check letter, LA, establishment, year of allocation, serial."""
    body = f"{la_code:03d}{establishment:04d}{year % 100:02d}{serial:03d}"
    return upn_check_letter(body) + body


def uln_check_digit(body9: str) -> int | None:
    """ESFA ULN check digit for the first nine digits; None when no ULN can end them.

    Digits are weighted 10..2; a remainder of 0 modulo 11 would need check digit 10, so
    such bodies are never issued.
    """
    if len(body9) != 9 or not body9.isascii() or not body9.isdigit():
        raise ValueError("a ULN body is 9 digits")
    remainder = sum(int(ch) * (10 - i) for i, ch in enumerate(body9)) % 11
    return None if remainder == 0 else 10 - remainder


def is_valid_uln(uln: str) -> bool:
    """True for a 10-digit ULN (no leading zero) with a matching check digit."""
    if len(uln) != 10 or not uln.isascii() or not uln.isdigit() or uln[0] == "0":
        return False
    return uln_check_digit(uln[:9]) == int(uln[9])


def uci_check_character(body12: str) -> str:
    """JCQ check character for a UCI's first 12 characters (weights 16..5, modulo 17)."""
    if len(body12) != 12 or not body12.isascii() or not body12.isdigit():
        raise ValueError("a UCI body is 12 digits")
    total = sum(int(ch) * (16 - i) for i, ch in enumerate(body12))
    return UCI_CHECK_LETTERS[total % 17]


def make_uci(centre: str, year: int, candidate_number: str) -> str:
    """A UCI: centre number, awarding-body digit 0, year of registration, candidate."""
    body = f"{centre}0{year % 100:02d}{candidate_number}"
    return body + uci_check_character(body)
