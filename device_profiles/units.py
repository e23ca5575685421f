"""UCUM units and explicit conversions.

Finnish care works in mmol/L, L/min, mm[Hg], kg, cm and Cel (DOMAIN.md, intro). Devices may
report mg/dL, lb, in, [degF] or kPa: the edge converts once, keeps the original value and unit in
the observation's provenance, and never rounds a converted value into a different clinical band.

Every conversion factor is named here with its source; nothing else in the project multiplies
units by bare literals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


class UnitError(ValueError):
    """A unit is unknown or cannot be converted to the requested one."""


#: Glucose, DOMAIN.md §intro: 1 mmol/L = 18.016 mg/dL (molar mass of glucose 180.16 g/mol).
GLUCOSE_MG_DL_PER_MMOL_L: Final = 18.016
#: International avoirdupois pound (exact definition).
KG_PER_LB: Final = 0.45359237
#: International inch (exact definition).
CM_PER_IN: Final = 2.54
#: Conventional millimetre of mercury: 133.322387415 Pa (exact by definition).
PA_PER_MMHG: Final = 133.322387415

#: UCUM codes the project uses, with a human label.
KNOWN_UNITS: Final[dict[str, str]] = {
    "mmol/L": "millimole per litre",
    "mg/dL": "milligram per decilitre",
    "L/min": "litre per minute",
    "mm[Hg]": "millimetre of mercury",
    "kPa": "kilopascal",
    "kg": "kilogram",
    "[lb_av]": "pound",
    "cm": "centimetre",
    "[in_i]": "inch",
    "Cel": "degree Celsius",
    "[degF]": "degree Fahrenheit",
    "%": "percent",
    "/min": "per minute",
    "kg/m2": "kilogram per square metre",
    "mg/dL/min": "milligram per decilitre per minute",
    "mmol/L/min": "millimole per litre per minute",
    "1": "count",
}


@dataclass(frozen=True, slots=True)
class _Conversion:
    forward: Callable[[float], float]
    why: str


def _glucose_to_mmol(v: float) -> float:
    return v / GLUCOSE_MG_DL_PER_MMOL_L


def _glucose_to_mgdl(v: float) -> float:
    return v * GLUCOSE_MG_DL_PER_MMOL_L


_CONVERSIONS: Final[dict[tuple[str, str], _Conversion]] = {
    ("mg/dL", "mmol/L"): _Conversion(_glucose_to_mmol, "glucose, 18.016 mg/dL per mmol/L"),
    ("mmol/L", "mg/dL"): _Conversion(_glucose_to_mgdl, "glucose, 18.016 mg/dL per mmol/L"),
    ("mg/dL/min", "mmol/L/min"): _Conversion(_glucose_to_mmol, "glucose rate"),
    ("mmol/L/min", "mg/dL/min"): _Conversion(_glucose_to_mgdl, "glucose rate"),
    ("[lb_av]", "kg"): _Conversion(lambda v: v * KG_PER_LB, "avoirdupois pound"),
    ("kg", "[lb_av]"): _Conversion(lambda v: v / KG_PER_LB, "avoirdupois pound"),
    ("[in_i]", "cm"): _Conversion(lambda v: v * CM_PER_IN, "international inch"),
    ("cm", "[in_i]"): _Conversion(lambda v: v / CM_PER_IN, "international inch"),
    ("[degF]", "Cel"): _Conversion(lambda v: (v - 32.0) * 5.0 / 9.0, "Fahrenheit scale"),
    ("Cel", "[degF]"): _Conversion(lambda v: v * 9.0 / 5.0 + 32.0, "Fahrenheit scale"),
    ("kPa", "mm[Hg]"): _Conversion(lambda v: v * 1000.0 / PA_PER_MMHG, "conventional mmHg"),
    ("mm[Hg]", "kPa"): _Conversion(lambda v: v * PA_PER_MMHG / 1000.0, "conventional mmHg"),
}


def is_known_unit(unit: str) -> bool:
    return unit in KNOWN_UNITS


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert ``value`` between two UCUM units; raise :class:`UnitError` if not defined.

    The glucose conversions are only valid for glucose; callers pass glucose values only (the
    measure's code decides the canonical unit, see :mod:`device_profiles.codes`).
    """
    if not math.isfinite(value):
        raise UnitError(f"cannot convert a non-finite value {value!r}")
    if from_unit == to_unit:
        return value
    conv = _CONVERSIONS.get((from_unit, to_unit))
    if conv is None:
        raise UnitError(f"no conversion from {from_unit!r} to {to_unit!r}")
    return conv.forward(value)


def can_convert(from_unit: str, to_unit: str) -> bool:
    return from_unit == to_unit or (from_unit, to_unit) in _CONVERSIONS
