"""Which decoder reads which characteristic, and a JSON rendering of what they return.

Used by ``remon decode --uuid 0x2A18 <hex>``, the field engineers' tool for captured bytes.
Pure: decoders are looked up by 16-bit UUID and imported on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from device_profiles.gatt.ieee11073 import DateTime, DecodeError, Number


@dataclass(frozen=True, slots=True)
class Characteristic:
    uuid: int
    name: str
    module: str
    function: str
    takes_crc: bool = False

    def decoder(self) -> Callable[..., Any]:
        fn: Callable[..., Any] = getattr(importlib.import_module(self.module), self.function)
        return fn


_G = "device_profiles.gatt.glucose"
_C = "device_profiles.gatt.cgm"
_V = "device_profiles.gatt.vitals"

CHARACTERISTICS: Final[Mapping[int, Characteristic]] = {
    c.uuid: c
    for c in (
        Characteristic(0x2A18, "Glucose Measurement", _G, "decode_glucose_measurement"),
        Characteristic(0x2A34, "Glucose Measurement Context", _G, "decode_glucose_context"),
        Characteristic(0x2A51, "Glucose Feature", _G, "decode_glucose_feature"),
        Characteristic(0x2A52, "Record Access Control Point", _G, "decode_racp"),
        Characteristic(0x2AA7, "CGM Measurement", _C, "decode_cgm_measurements", True),
        Characteristic(0x2AA8, "CGM Feature", _C, "decode_cgm_feature"),
        Characteristic(0x2AA9, "CGM Status", _C, "decode_cgm_status", True),
        Characteristic(0x2AAA, "CGM Session Start Time", _C, "decode_cgm_session_start_time", True),
        Characteristic(0x2AAB, "CGM Session Run Time", _C, "decode_cgm_session_run_time", True),
        Characteristic(0x2AAC, "CGM Specific Ops Control Point", _C, "decode_socp", True),
        Characteristic(0x2A35, "Blood Pressure Measurement", _V, "decode_blood_pressure"),
        Characteristic(
            0x2A36, "Intermediate Cuff Pressure", _V, "decode_intermediate_cuff_pressure"
        ),
        Characteristic(0x2A1C, "Temperature Measurement", _V, "decode_temperature"),
        Characteristic(0x2A9D, "Weight Measurement", _V, "decode_weight"),
        Characteristic(0x2A9E, "Weight Scale Feature", _V, "decode_weight_scale_feature"),
        Characteristic(0x2A9C, "Body Composition Measurement", _V, "decode_body_composition"),
        Characteristic(0x2A5E, "PLX Spot-check Measurement", _V, "decode_plx_spot_check"),
        Characteristic(0x2A5F, "PLX Continuous Measurement", _V, "decode_plx_continuous"),
        Characteristic(0x2A60, "PLX Features", _V, "decode_plx_features"),
        Characteristic(0x2A2B, "Current Time", _V, "decode_current_time"),
        Characteristic(0x2A19, "Battery Level", _V, "decode_battery_level"),
        Characteristic(0x2A29, "Manufacturer Name String", _V, "decode_dis_string"),
        Characteristic(0x2A24, "Model Number String", _V, "decode_dis_string"),
        Characteristic(0x2A25, "Serial Number String", _V, "decode_dis_string"),
        Characteristic(0x2A26, "Firmware Revision String", _V, "decode_dis_string"),
        Characteristic(0x2A27, "Hardware Revision String", _V, "decode_dis_string"),
        Characteristic(0x2A28, "Software Revision String", _V, "decode_dis_string"),
    )
}


class UsageError(ValueError):
    """The caller asked for something impossible (unknown UUID, not hex): not the device."""


def parse_uuid(text: str) -> int:
    t = text.strip().lower().removeprefix("0x")
    try:
        uuid = int(t, 16)
    except ValueError:
        raise UsageError(f"not a 16-bit UUID: {text!r}") from None
    if uuid not in CHARACTERISTICS:
        known = ", ".join(f"0x{u:04X}" for u in sorted(CHARACTERISTICS))
        raise UsageError(f"no decoder for 0x{uuid:04X}; known: {known}")
    return uuid


def parse_hex(text: str) -> bytes:
    t = "".join(text.split()).replace(":", "").replace("-", "")
    t = t.removeprefix("0x")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise UsageError(f"not hex bytes: {text[:60]!r}") from None


def decode(uuid: int, data: bytes, *, crc: bool = False) -> Any:
    """Decode ``data`` as the characteristic ``uuid``; raises DecodeError on malformed bytes."""
    c = CHARACTERISTICS[uuid]
    fn = c.decoder()
    return fn(data, crc=crc) if c.takes_crc else fn(data)


def in_care_units(uuid: int, value: Any) -> dict[str, Any]:
    """Values restated in the units care reads (exactly scaled, as the device meant them)."""
    if uuid == 0x2A18 and value.concentration is not None and value.concentration.is_number:
        if value.unit == "kg/L":
            return {"concentration_mg_dl": value.mg_dl()}
        return {"concentration_mmol_l": value.mmol_l()}
    return {}


def to_jsonable(v: Any) -> Any:
    """Plain JSON data: dataclass fields by name, numbers with their specials, flags by name."""
    if isinstance(v, Number):
        if v.special is not None:
            return {
                "value": None,
                "special": v.special.value,
                "absent_reason": v.special.absent_reason.value,
            }
        return {"value": v.value, "mantissa": v.mantissa, "exponent": v.exponent}
    if isinstance(v, DateTime):
        dt = v.value
        return None if dt is None else dt.isoformat()
    if isinstance(v, Enum):
        return v.value if isinstance(v.value, str) else v.name.lower()
    if isinstance(v, Decimal):
        return float(v)  # exact decimals (0.005 kg steps) print exactly as JSON numbers
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        out = {f.name: to_jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if "value" not in out and isinstance(getattr(type(v), "value", None), property):
            # scaled quantities (raw x resolution): give the value itself too
            out["value"] = to_jsonable(v.value)  # type: ignore[attr-defined]
        return out
    if isinstance(v, frozenset | set):
        return sorted(to_jsonable(x) for x in v)
    if isinstance(v, list | tuple):
        return [to_jsonable(x) for x in v]
    if isinstance(v, bytes | bytearray):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


__all__ = [
    "CHARACTERISTICS",
    "Characteristic",
    "DecodeError",
    "UsageError",
    "decode",
    "parse_hex",
    "parse_uuid",
    "to_jsonable",
]
