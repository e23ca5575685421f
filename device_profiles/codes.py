"""The measures remon handles, with their LOINC, MDC (IEEE 11073-10101) and UCUM codes.

Source: ../shared/docs/DOMAIN.md §6 (codes table). The project refers to a measure by its short
``key`` (stable, used on the wire and in storage); LOINC and MDC codes travel with it for FHIR
export. The canonical unit is the one Finnish care works in; devices' own units are converted
at the edge (:mod:`device_profiles.units`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True, kw_only=True)
class Measure:
    key: str
    display: str
    loinc: str | None
    mdc: int | None
    unit: str


_ALL: Final[tuple[Measure, ...]] = (
    Measure(
        key="glucose.capillary",
        display="Capillary blood glucose (meter)",
        loinc="14743-9",
        mdc=160184,
        unit="mmol/L",
    ),
    Measure(
        key="glucose.cgm",
        display="Interstitial glucose (CGM)",
        loinc="105272-9",
        mdc=160212,
        unit="mmol/L",
    ),
    Measure(
        key="bp.systolic",
        display="Systolic blood pressure",
        loinc="8480-6",
        mdc=150021,
        unit="mm[Hg]",
    ),
    Measure(
        key="bp.diastolic",
        display="Diastolic blood pressure",
        loinc="8462-4",
        mdc=150022,
        unit="mm[Hg]",
    ),
    Measure(
        key="pulse.cuff", display="Pulse rate (BP cuff)", loinc="8867-4", mdc=149546, unit="/min"
    ),
    Measure(
        key="pulse.oximeter",
        display="Pulse rate (oximeter)",
        loinc="8867-4",
        mdc=149530,
        unit="/min",
    ),
    Measure(key="spo2", display="Oxygen saturation (SpO2)", loinc="59408-5", mdc=150456, unit="%"),
    Measure(
        key="body.temperature", display="Body temperature", loinc="8310-5", mdc=150364, unit="Cel"
    ),
    Measure(key="body.weight", display="Body weight", loinc="29463-7", mdc=188736, unit="kg"),
    Measure(key="body.height", display="Body height", loinc="8302-2", mdc=188740, unit="cm"),
    Measure(key="bmi", display="Body mass index", loinc="39156-5", mdc=188752, unit="kg/m2"),
    Measure(key="pef", display="Peak expiratory flow", loinc="19935-6", mdc=152584, unit="L/min"),
    # Derived at the edge from a CGM's stream (edge_agent.cgm_stream), not measured: DOMAIN.md §6
    # gives them no LOINC/MDC code, and none is invented here. They carry the "derived" flag.
    Measure(
        key="glucose.cgm.trend",
        display="CGM glucose rate of change (15 min)",
        loinc=None,
        mdc=None,
        unit="mmol/L/min",
    ),
    Measure(
        key="glucose.cgm.predicted",
        display="CGM glucose predicted 20 min ahead",
        loinc=None,
        mdc=None,
        unit="mmol/L",
    ),
)

MEASURES: Final[dict[str, Measure]] = {m.key: m for m in _ALL}


class UnknownMeasureError(KeyError):
    pass


def measure(key: str) -> Measure:
    try:
        return MEASURES[key]
    except KeyError:
        raise UnknownMeasureError(key) from None
