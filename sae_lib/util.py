"""Two small helpers every module uses: a positive-integer check and a progress bar a build can silence."""

from __future__ import annotations

from tqdm import tqdm


def positive_int(name: str, value) -> int:
    """``value`` if it is a positive ``int`` (``True`` does not count), else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def progress_bar(iterable=None, *, show: bool = True, **options) -> tqdm:
    """``tqdm`` refreshed at most twice a second, or switched off when ``show`` is false.

    When shown, whether to draw is left to tqdm, so ``TQDM_DISABLE=1`` silences every bar in headless
    runs (the book's build, CI); passing ``disable=False`` would override that setting.
    """
    return tqdm(iterable, mininterval=0.5, **options, **({} if show else {"disable": True}))
