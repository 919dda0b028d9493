"""argparse `type=` functions shared by the management commands: bad values fail with a
message naming the problem, and Django turns that into a CommandError (exit code 1)."""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentTypeError
from collections.abc import Callable


def whole_number(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            raise ArgumentTypeError(f"{value!r} is not a whole number") from None
        if number < minimum:
            raise ArgumentTypeError(f"must be at least {minimum}, not {number}")
        if maximum is not None and number > maximum:
            raise ArgumentTypeError(f"must be at most {maximum}, not {number}")
        return number

    parse.__name__ = "whole number"
    return parse


def iso_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def seconds(
    minimum: float, maximum: float, *, exclusive_minimum: bool = False
) -> Callable[[str], float]:
    """A number of seconds from `minimum` (or just above it) to `maximum`."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ArgumentTypeError(f"{value!r} is not a number of seconds") from None
        # Written so that NaN fails too: every comparison with it is false.
        above = number > minimum if exclusive_minimum else number >= minimum
        if not (above and number <= maximum):
            raise ArgumentTypeError(f"must be between {minimum:g} and {maximum:g} seconds")
        return number

    parse.__name__ = "seconds"
    return parse
