"""Click parameter types for numbers whose every accepted value the command can use.

click's ``FloatRange(min=0)`` lets ``nan`` and ``inf`` through (``nan < 0`` is false), and
``int`` takes any size, so ``--seed 2**64`` or ``--max-new-tokens 10**12`` reached torch
and failed there with a raw error, or ran for ever. These types refuse such values as a
usage error naming the flag (exit code 2). Importing this module imports click alone.
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.FloatRange):
    """A float that is neither NaN nor infinite, within ``[min, max]`` (either may be open)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        number = click.FLOAT.convert(value, param, ctx)  # the usual "not a valid float"
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class BoundedInt(click.IntRange):
    """An integer within ``[min, max]``, both required: no flag takes an unbounded count."""

    name = "integer"

    def __init__(self, min: int, max: int) -> None:
        super().__init__(min=min, max=max)


class Seed(BoundedInt):
    """A random seed torch accepts: ``0 .. 2**64 - 1``."""

    def __init__(self) -> None:
        super().__init__(0, 2**64 - 1)


def bad_parameter(flag: str, message: str) -> click.BadParameter:
    """A usage error about ``flag`` found after parsing (e.g. once the model is loaded)."""
    return click.BadParameter(message, param_hint=f"'{flag}'")
