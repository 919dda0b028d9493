"""argparse `type=` functions of the bench commands (whole numbers: jobs.management.arguments)."""

from __future__ import annotations

from argparse import ArgumentTypeError
from collections.abc import Callable


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
