"""Streaming CGM processing: cost of one ``CgmStream.update`` (edge_agent/cgm_stream.py).

One stream is fed 100 000 readings (``--quick``: 10 000) 5 min apart (~347 days of one sensor):
a slow daily wave plus Gaussian sensor noise (SD 0.25 mmol/L), with an occasional device LOW,
a missing value and a duplicate mixed in so the flag paths run too. Times are built before
timing; each call is timed alone with ``perf_counter_ns`` on one core. Reports mean, p50, p99
and max in µs per update (target: <= 50 µs on a Raspberry Pi class core), the flags seen and
the buffer sizes at the end (they must not grow with the number of readings). The JSON's
``within_target`` compares p50 with the target: on a shared machine the mean, p99 and max also
include preemption by other processes.

Usage: python bench/bench_cgm_stream.py [--quick] [--readings N] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import random
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, pct
from edge_agent.cgm_stream import CgmStream

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
TARGET_US = 50.0


def readings(n: int, seed: int) -> list[tuple[datetime, float | None, str | None]]:
    rng = random.Random(seed)
    out: list[tuple[datetime, float | None, str | None]] = []
    for k in range(n):
        t = T0 + timedelta(minutes=5 * k)
        day = k / 288.0
        v = 7.5 + 2.5 * math.sin(2 * math.pi * day) + 1.0 * math.sin(2 * math.pi * day * 3.1)
        v += rng.gauss(0.0, 0.25)
        r = rng.random()
        if r < 0.002:
            out.append((t, 2.2, "<"))
        elif r < 0.004:
            out.append((t, None, None))
        else:
            out.append((t, v, None))
        if r > 0.998:  # the same reading again (a re-sent record)
            out.append(out[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 000 readings")
    ap.add_argument("--readings", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = args.readings or (10_000 if args.quick else 100_000)

    rows = readings(n, args.seed)
    stream = CgmStream()
    update = stream.update
    # warm-up on a separate stream (imports, caches)
    warm = CgmStream()
    for t, v, c in rows[:500]:
        warm.update(t, v, comparator=c)

    # The input rows are the bench's, not the agent's: keep the collector from rescanning them.
    gc.collect()
    gc.freeze()
    times_us: list[float] = []
    flags: Counter[str] = Counter()
    trends = 0
    clock = time.perf_counter_ns
    wall0 = clock()
    for t, v, c in rows:
        a = clock()
        u = update(t, v, comparator=c)
        b = clock()
        times_us.append((b - a) / 1000.0)
        flags.update(str(f) for f in u.flags)
        trends += u.trend_mmol_l_min is not None
    wall_s = (clock() - wall0) / 1e9

    mean = statistics.fmean(times_us)
    p50, p99 = pct(times_us, 50), pct(times_us, 99)
    sizes = stream.buffer_sizes()
    print(f"CgmStream.update over {len(rows)} readings (5-min spacing, noise SD 0.25 mmol/L)")
    print(f"  python {platform.python_version()} on {platform.machine()}")
    print(
        f"  per update: mean {mean:.2f} µs, p50 {p50:.2f} µs, p99 {p99:.2f} µs, "
        f"max {max(times_us):.1f} µs (target <= {TARGET_US:g} µs)"
    )
    print(f"  throughput incl. timing overhead: {len(rows) / wall_s:,.0f} updates/s")
    print(f"  readings with a trend: {trends} ({100.0 * trends / len(rows):.1f} %)")
    print(f"  flags: {dict(sorted(flags.items()))}")
    print(f"  buffers at the end: {sizes}")
    emit(
        "cgm_stream",
        {
            "readings": len(rows),
            "mean_us": round(mean, 3),
            "p50_us": round(p50, 3),
            "p99_us": round(p99, 3),
            "max_us": round(max(times_us), 1),
            "target_us": TARGET_US,
            "within_target": p50 <= TARGET_US,  # p50: immune to preemption by other processes
            "with_trend": trends,
            "flags": dict(sorted(flags.items())),
            "buffers": sizes,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    )


if __name__ == "__main__":
    main()
