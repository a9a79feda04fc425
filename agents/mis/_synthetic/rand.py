"""Small helpers over `random.Random`; never the module-level generator."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

from agents.mis._synthetic.tables import Weighted


def stream(seed: int, name: str) -> random.Random:
    """An independent generator per concern, so changing one never reshuffles another.

    String seeds are hashed with SHA-512 by `random`, so they are stable across runs
    and interpreters (unlike `hash()`).
    """
    return random.Random(f"misbroker-synthetic/{seed}/{name}")


def pick(rng: random.Random, weighted: Weighted) -> str:
    keys = [k for k, _ in weighted]
    return rng.choices(keys, weights=[w for _, w in weighted])[0]


def chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def day_between(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randrange((last - first).days + 1))
