"""Decodes per second of the GATT codecs on one core (issue 3 figure: aim >= 200 000/s).

Each decode is the full checked path (flags, bounds, dates, specials, CRC where the profile has
it) over hand-built spec values. Usage: python bench/bench_decode.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit
from device_profiles.gatt.cgm import decode_cgm_measurements
from device_profiles.gatt.glucose import decode_glucose_measurement
from device_profiles.gatt.registry import parse_hex
from device_profiles.gatt.vitals import decode_blood_pressure

# A meter record: time offset, concentration kg/L + type/location, sensor status, context follows.
GLUCOSE = parse_hex("1B 05 00 E2 07 0C 1F 17 3B 3B 00 00 78 B0 11 00 00")
# CGM records (size, flags, glucose SFLOAT mg/dL, time offset u16), without and with E2E-CRC.
CGM_1 = bytes([6, 0]) + (120).to_bytes(2, "little") + (5).to_bytes(2, "little")


def _cgm_with_crc() -> bytes:
    from device_profiles.gatt.ieee11073 import crc16_mcrf4xx

    body = bytes([8, 0]) + (120).to_bytes(2, "little") + (5).to_bytes(2, "little")
    return body + crc16_mcrf4xx(body).to_bytes(2, "little")


BP = parse_hex("1E 79 00 50 00 5A 00 E2 07 0C 1F 17 3B 3B 48 00 01 00 00")


def rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    batch = 2000
    t0 = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def download_1000() -> tuple[float, int]:
    """Time to download 1 000 stored records from the virtual meter, protocol work only.

    Procedure and meter exchange bytes over an in-memory link (no radio): this is the CPU cost
    that the BLE link time (issue 3's bumble peripherals) will add to.
    """
    from collections import deque

    from device_profiles.gatt.glucose_download import (
        GlucoseDownload,
        RecordReceived,
        WriteControlPoint,
    )
    from device_profiles.gatt.sim_glucose_meter import VirtualGlucoseMeter, make_records

    meter = VirtualGlucoseMeter(make_records(1000))
    proc = GlucoseDownload(None)
    inbound: deque[tuple[int, bytes]] = deque()
    got = 0
    t0 = time.perf_counter()

    def apply(outputs: list[object]) -> None:
        nonlocal got
        for o in outputs:
            if isinstance(o, WriteControlPoint):
                inbound.extend(x for x in meter.handle(o.uuid, o.data) if isinstance(x, tuple))
            elif isinstance(o, RecordReceived):
                got += 1

    apply(list(proc.start(now=0.0)))
    now = 0.0
    while inbound and not proc.finished:
        now += 0.001
        apply(list(proc.receive(*inbound.popleft(), now=now)))
    return (time.perf_counter() - t0) * 1000, got


def download_1000_over_gatt() -> tuple[float, int]:
    """1 000 records from a bumble virtual meter through bleak, the link and the procedure.

    Everything a hub does except the radio: scan, connect (bleak-retry-connector), discovery,
    DIS reads, CCCD writes, RACP count + report, one notification per record. Virtual air time
    is close to zero, so this is the hub's own protocol and Python cost per download.
    """
    import asyncio

    from device_profiles.gatt.glucose_download import GlucoseDownload, RecordReceived
    from device_profiles.gatt.sim_glucose_meter import VirtualGlucoseMeter, make_records
    from edge_agent.ble import BleConnector, BleSettings
    from edge_agent.gatt_driver import GlucoseProcedure, drive
    from edge_agent.virtual_ble import VirtualGlucoseMeterPeripheral, VirtualRadio

    async def scenario() -> tuple[float, int]:
        radio = VirtualRadio()
        meter = VirtualGlucoseMeterPeripheral(
            radio, VirtualGlucoseMeter(make_records(1000)), address="F0:00:00:00:00:01"
        )
        await meter.start()
        client, scanner = radio.backends()
        conn = BleConnector(BleSettings(), client_backend=client, scanner_backend=scanner)
        got = 0

        async def on_event(ev: object, raw: bytes | None) -> None:
            nonlocal got
            if isinstance(ev, RecordReceived):
                got += 1

        t0 = time.perf_counter()
        async with conn.connect("F0:00:00:00:00:01", service_uuid=0x1808) as link:
            await drive(link, GlucoseProcedure(GlucoseDownload(None)), on_event)
        ms = (time.perf_counter() - t0) * 1000
        await radio.close()
        return ms, got

    return asyncio.run(scenario())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    seconds = 0.5 if ap.parse_args().quick else 2.0
    cgm_crc = _cgm_with_crc()
    cgm_many = CGM_1 * 10  # one notification carrying ten records
    cases = {
        "glucose_measurement_0x2A18": lambda: decode_glucose_measurement(GLUCOSE),
        "cgm_measurement_0x2AA7": lambda: decode_cgm_measurements(CGM_1, crc=False),
        "cgm_measurement_with_crc": lambda: decode_cgm_measurements(cgm_crc, crc=True),
        "cgm_10_records_per_notification": lambda: decode_cgm_measurements(cgm_many, crc=False),
        "blood_pressure_0x2A35": lambda: decode_blood_pressure(BP),
    }
    results: dict[str, float] = {}
    for name, fn in cases.items():
        fn()  # fails loudly if a sample is not valid
        r = rate(fn, seconds)
        per_record = r * 10 if "10_records" in name else r
        results[name] = per_record
        print(f"{name:36s} {per_record:10,.0f} decodes/s (one core)")
    ms, got = download_1000()
    assert got == 1000, got
    print(
        f"{'glucose download, 1 000 records':36s} {ms:10.1f} ms "
        "(procedure + virtual meter, no radio)"
    )
    gatt_ms, gatt_got = download_1000_over_gatt()
    assert gatt_got == 1000, gatt_got
    print(
        f"{'glucose download over GATT, 1 000':36s} {gatt_ms:10.1f} ms "
        "(scan + connect + discovery + download: bleak over a bumble virtual meter)"
    )
    emit(
        "decode",
        {
            "decodes_per_s": results,
            "glucose_download_1000_records_ms": ms,
            "glucose_download_1000_records_over_gatt_ms": gatt_ms,
        },
    )


if __name__ == "__main__":
    main()
