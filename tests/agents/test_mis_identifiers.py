"""UPN, ULN and UCI check characters."""

import random

import pytest

from agents.mis.identifiers import (
    is_valid_uln,
    is_valid_upn,
    make_uci,
    make_upn,
    uci_check_character,
    uln_check_digit,
    upn_check_letter,
)
from agents.mis.synthetic import is_valid_upn as reexported_is_valid_upn
from agents.mis.synthetic import upn_check_letter as reexported_check_letter


def test_upn_check_letter_matches_a_hand_computed_example() -> None:
    # LA 383, establishment 2001, allocated 2019, serial 042: body 383200119042.
    # Weights 2..13 on its digits 3 8 3 2 0 0 1 1 9 0 4 2:
    #   3*2 + 8*3 + 3*4 + 2*5 + 0*6 + 0*7 + 1*8 + 1*9 + 9*10 + 0*11 + 4*12 + 2*13
    #   = 6 + 24 + 12 + 10 + 0 + 0 + 8 + 9 + 90 + 0 + 48 + 26 = 233
    # 233 = 10 * 23 + 3, and "ABCDEFGHJKLMNPQRTUVWXYZ"[3] is "D".
    assert upn_check_letter("383200119042") == "D"
    assert make_upn(383, 2001, 2019, 42) == "D383200119042"
    assert is_valid_upn("D383200119042")


def test_upn_check_letter_for_a_zero_sum_is_a() -> None:
    assert upn_check_letter("000000000000") == "A"


def test_upn_check_letter_skips_i_o_and_s() -> None:
    rng = random.Random(1)
    letters = {upn_check_letter(f"{rng.randrange(10**12):012d}") for _ in range(2000)}
    assert letters == set("ABCDEFGHJKLMNPQRTUVWXYZ")


@pytest.mark.parametrize(
    "upn",
    [
        "E383200119042",  # wrong check letter
        "D38320011904",  # too short
        "D3832001190422",  # too long
        "D38320011904A",  # temporary-style letter where a digit belongs
        "d383200119042",  # lower case letter
        "",
    ],
)
def test_invalid_upns_are_refused(upn: str) -> None:
    assert not is_valid_upn(upn)


def test_upn_check_letter_rejects_a_malformed_body() -> None:
    with pytest.raises(ValueError, match="12 digits"):
        upn_check_letter("38320011904X")


def test_synthetic_module_reexports_the_upn_helpers() -> None:
    assert reexported_check_letter is upn_check_letter
    assert reexported_is_valid_upn is is_valid_upn


def test_uln_check_digit_matches_a_hand_computed_example() -> None:
    # 1*10 + 2*9 + 3*8 + 4*7 + 5*6 + 6*5 + 7*4 + 8*3 + 9*2 = 210; 210 % 11 = 1; 10 - 1 = 9.
    assert uln_check_digit("123456789") == 9
    assert is_valid_uln("1234567899")
    assert not is_valid_uln("1234567890")


def test_uln_bodies_with_remainder_zero_have_no_check_digit() -> None:
    # 2*10 + 1*2 = 22, a multiple of 11: it would need check digit 10, so is never issued.
    assert uln_check_digit("200000001") is None


def test_ulns_with_a_leading_zero_are_refused() -> None:
    assert not is_valid_uln("0234567899")


def test_uci_check_character_matches_the_published_wjec_example() -> None:
    # WJEC's worked example 68199 0 01 2058 G: weights 16..5, modulo 17.
    assert uci_check_character("681990012058") == "G"
    assert make_uci("68199", 2001, "2058") == "681990012058G"
