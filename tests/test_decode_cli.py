"""`remon decode`: every registered characteristic decodes, and bad bytes say where and what."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt.registry import (
    CHARACTERISTICS,
    DecodeError,
    UsageError,
    decode,
    parse_hex,
    parse_uuid,
    to_jsonable,
)


def remon(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remon.cli", "decode", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_registered_decoder_exists() -> None:
    for c in CHARACTERISTICS.values():
        assert callable(c.decoder()), c


@pytest.mark.parametrize("uuid", sorted(CHARACTERISTICS))
@given(data=st.binary(max_size=40), crc=st.booleans())
def test_random_bytes_decode_or_name_the_byte(uuid: int, data: bytes, crc: bool) -> None:
    try:
        value = decode(uuid, data, crc=crc)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        assert "expected" in str(exc)
    else:
        json.dumps(to_jsonable(value))  # whatever decodes also renders as JSON


def test_glucose_measurement_as_json() -> None:
    # flags 0x1B: time offset, concentration kg/L + type/location, status... context follows
    r = remon("--uuid", "0x2A18", "1B 05 00 E2 07 0C 1F 17 3B 3B 00 00 78 B0 11 00 00")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == "Glucose Measurement"
    v = doc["value"]
    assert v["sequence_number"] == 5
    assert v["base_time"] == "2018-12-31T23:59:59"
    assert v["unit"] == "kg/L"
    assert v["concentration"] == {"value": 0.0012, "mantissa": 120, "exponent": -5}
    assert (v["glucose_type"], v["sample_location"]) == ("capillary_whole_blood", "finger")
    assert doc["in_care_units"] == {"concentration_mg_dl": 120.0}


def test_special_values_are_absent_reasons_not_numbers() -> None:
    r = remon("--uuid", "2a1c", "00 FF FF 7F 00")  # FLOAT NaN
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["value"]["temperature"]
    assert t == {"value": None, "special": "nan", "absent_reason": "not-a-number"}


def test_malformed_bytes_exit_1_with_offset() -> None:
    r = remon("--uuid", "0x2A1C", "00 B0 0E 00")
    assert r.returncode == 1
    assert "byte 1" in r.stderr
    assert "FLOAT" in r.stderr
    assert r.stdout == ""


def test_stdin_many_lines_keeps_going() -> None:
    lines = "\n".join(
        ["# capture from a kiosk", "2A1C 00B00E00FE", "2A1C 00B0", "0x2A29 41636d65", "2A35 zz"]
    )
    r = remon("--stdin", stdin=lines)
    assert r.returncode == 1
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["uuid"] for o in out] == ["0x2A1C", "0x2A29"]
    assert out[1]["value"] == "Acme"
    assert "line 3: error: byte 1" in r.stderr
    assert "line 5: error: not hex bytes" in r.stderr


def test_usage_errors_exit_2() -> None:
    r = remon("--uuid", "0x9999", "00")
    assert r.returncode == 2
    assert "no decoder for 0x9999" in r.stderr
    with pytest.raises(UsageError):
        parse_uuid("glucose")
    with pytest.raises(UsageError):
        parse_hex("0g")
    assert parse_hex("0x1b:05-00 e2") == bytes.fromhex("1b0500e2")
