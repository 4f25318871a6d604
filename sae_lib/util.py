"""Small helpers every module uses: checks of integer and real-valued settings, a seeded generator,
and a progress bar a build can silence.

The checks accept numpy's numbers as well as Python's (``np.int64(2)`` wherever ``2`` is allowed, as
``numbers.Integral`` does) and turn them into plain ``int`` and ``float``, so a setting that reaches a
JSON config or a format string is always an ordinary Python number.
"""

from __future__ import annotations

import math
import numbers

import torch
from tqdm import tqdm


def is_integer(value) -> bool:
    """True for Python and numpy integers, False for ``True``/``False`` (a flag is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name: str, value) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy), else a TypeError naming ``name``."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def seeded_generator(seed) -> torch.Generator:
    """A CPU random generator seeded with ``seed``, any integer (torch's own ``manual_seed`` refuses numpy's)."""
    return torch.Generator().manual_seed(integer("seed", seed))


def positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is a positive integer (``True`` does not count), else an error naming ``name``."""
    if not is_integer(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def real_number(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real number within the given bounds, else an error
    naming ``name`` and the allowed range: TypeError for a non-number (``"1e-3"``, ``True``), ValueError
    for NaN, ±inf or a value out of range. ``low_open``/``high_open`` exclude the bound itself."""
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    allowed = f"a finite number {allowed}".rstrip()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number ({allowed}), got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def progress_bar(iterable=None, *, show: bool = True, **options) -> tqdm:
    """``tqdm`` refreshed at most twice a second, or switched off when ``show`` is false.

    When shown, whether to draw is left to tqdm, so ``TQDM_DISABLE=1`` silences every bar in headless
    runs (the book's build, CI); passing ``disable=False`` would override that setting.
    """
    return tqdm(iterable, mininterval=0.5, **options, **({} if show else {"disable": True}))
