"""CGM consensus metrics + AGP percentiles: time per patient and for a 1000-patient batch.

1. One patient, 14 days at 5 min (4032 readings, times as datetime64): ``cgm_metrics`` +
   ``agp_profile`` (15-min bins, smoothed) per call, mean/p50/p99 ms (aim <= 5 ms). Also the
   ``remon cgm-report`` path for the same patient as text (CSV parse + validation + metrics).
2. 1000 such patients (different traces), metrics + AGP for each: total seconds (aim <= 5 s).

In-process, one core; the traces are made before timing. Prints human lines and one
``JSON {"bench": "cgm", ...}`` line.

Usage: python bench/bench_cgm.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, pct
from cloud_ingest.analytics.cgm_metrics import agp_profile, cgm_metrics
from remon.cgm_report import analyse, parse_cgm_csv

READINGS = 14 * 288  # 14 days at 5 min
T0 = np.datetime64("2026-06-01T00:00:00", "s")


def patient(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 14-day 5-min trace in mg/dL (times as datetime64[s]), every reading present."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(READINGS) * 300
    tod = (t_s % 86_400) / 3600
    v = 150 + 45 * np.sin(2 * np.pi * (tod - 5) / 24) + rng.normal(0, 25, READINGS)
    v = np.round(np.clip(v, 40, 400))  # synthetic: the generator's own floor/ceiling
    return T0 + t_s.astype("timedelta64[s]"), v


def one(t: np.ndarray, v: np.ndarray) -> None:
    m = cgm_metrics(t, v, unit="mg/dL")
    p = agp_profile(t, v, unit="mg/dL")
    assert m.readings == v.size
    assert p.values.shape == (5, 96)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and patients")
    args = ap.parse_args()
    reps = 100 if args.quick else 1000
    n_patients = 100 if args.quick else 1000

    t, v = patient(1)
    for _ in range(20):
        one(t, v)
    times_ms: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        one(t, v)
        times_ms.append((time.perf_counter() - t0) * 1e3)
    mean_ms = sum(times_ms) / len(times_ms)
    p50, p99 = pct(times_ms, 50), pct(times_ms, 99)
    print(
        f"one patient ({v.size} readings, 14 d at 5 min): metrics + AGP "
        f"mean {mean_ms:.3f} ms, p50 {p50:.3f} ms, p99 {p99:.3f} ms ({reps} runs)"
    )

    text = "id,time,gl\n" + "".join(
        f"p-1,{str(a).replace('T', ' ')},{b:g}\n" for a, b in zip(t, v, strict=True)
    )
    csv_ms: list[float] = []
    for _ in range(max(5, reps // 50)):
        t0 = time.perf_counter()
        analyse(parse_cgm_csv(io.StringIO(text), unit=None))
        csv_ms.append((time.perf_counter() - t0) * 1e3)
    csv_p50 = pct(csv_ms, 50)
    print(f"cgm-report path for it (CSV parse + validation + metrics): p50 {csv_p50:.1f} ms")

    batch = [patient(1000 + i) for i in range(n_patients)]
    t0 = time.perf_counter()
    for bt, bv in batch:
        one(bt, bv)
    total_s = time.perf_counter() - t0
    print(
        f"{n_patients} patients: metrics + AGP in {total_s:.3f} s "
        f"({total_s / n_patients * 1e3:.3f} ms per patient)"
    )
    emit(
        "cgm",
        {
            "readings_per_patient": int(v.size),
            "one_patient_mean_ms": round(mean_ms, 4),
            "one_patient_p50_ms": round(p50, 4),
            "one_patient_p99_ms": round(p99, 4),
            "one_patient_runs": reps,
            "report_path_csv_p50_ms": round(csv_p50, 2),
            "patients": n_patients,
            "patients_total_s": round(total_s, 4),
            "quick": args.quick,
        },
    )


if __name__ == "__main__":
    main()
