from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L, UnitError, can_convert, convert


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (180.16, "mg/dL", "mmol/L", 10.0),  # DOMAIN.md: 1 mmol/L = 18.016 mg/dL
        (3.0, "mmol/L", "mg/dL", 54.048),
        (100.0, "[lb_av]", "kg", 45.359237),
        (10.0, "[in_i]", "cm", 25.4),
        (98.6, "[degF]", "Cel", 37.0),
        (16.0, "kPa", "mm[Hg]", 120.009852),
        (5.5, "mmol/L", "mmol/L", 5.5),
    ],
)
def test_known_conversions(value: float, src: str, dst: str, expected: float) -> None:
    assert convert(value, src, dst) == pytest.approx(expected, rel=1e-5)


def test_undefined_conversions_are_refused() -> None:
    with pytest.raises(UnitError, match="no conversion"):
        convert(1.0, "mmol/L", "kg")
    with pytest.raises(UnitError, match="non-finite"):
        convert(math.inf, "mg/dL", "mmol/L")
    assert not can_convert("kg", "Cel")


@given(st.floats(min_value=0.01, max_value=1e4))
def test_glucose_round_trip(v: float) -> None:
    assert convert(convert(v, "mmol/L", "mg/dL"), "mg/dL", "mmol/L") == pytest.approx(v)
    assert GLUCOSE_MG_DL_PER_MMOL_L == 18.016
