"""PEF diaries analysed per second: parse the CSV, analyse, build the JSON (one core).

Each simulated patient has a 14-day diary: morning and evening sessions, pre- and post-BD,
3-6 blows each (about 250 blows), with a realistic morning dip and BD response, an occasional
missed session. Timed separately: ``parse_pef_csv`` over the CSV text, ``analyse_diary``
(Finnish convention, personal best given) and ``report_to_json``; then the text report.

Usage: python bench/bench_pef_diary.py [--quick] [--patients N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit
from cloud_ingest.analytics.pef_diary import (
    analyse_diary,
    parse_pef_csv,
    report_to_json,
)
from remon.pef_report import render_text

DAYS = 14
T0 = datetime(2026, 3, 2)  # noqa: DTZ001 - a diary is in the patient's local wall time


def diary_csv(rng: random.Random) -> str:
    base = rng.uniform(300, 600)
    dip = rng.uniform(0.0, 0.3)
    rows = ["time,session,phase,pef_l_min"]
    for day in range(DAYS):
        for session, hour in (("morning", 7), ("evening", 20)):
            if rng.random() < 0.03:  # a missed session now and then
                continue
            t = T0 + timedelta(days=day, hours=hour, minutes=rng.randint(0, 40))
            level = base * (1 - dip * rng.uniform(0.5, 1.0) if session == "morning" else 1)
            for phase, gain in (("pre", 1.0), ("post", 1 + rng.uniform(0.0, 0.25))):
                for _ in range(rng.randint(3, 6)):
                    v = round(min(900.0, max(50.0, level * gain - rng.uniform(0, 30))))
                    rows.append(f"{t.isoformat()},{session},{phase},{v}")
                    t += timedelta(seconds=rng.randint(30, 70))
                t += timedelta(minutes=20)
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 patients instead of 1000")
    ap.add_argument("--patients", type=int, default=None)
    args = ap.parse_args()
    n = args.patients or (100 if args.quick else 1000)
    rng = random.Random(7)
    texts = [diary_csv(rng) for _ in range(n)]

    t0 = time.perf_counter()
    parsed = [parse_pef_csv(t) for t in texts]
    t_parse = time.perf_counter() - t0
    n_blows = sum(len(p) for p in parsed)

    t0 = time.perf_counter()
    reports = [analyse_diary(p, personal_best_l_min=600.0) for p in parsed]
    t_analyse = time.perf_counter() - t0

    t0 = time.perf_counter()
    docs = [report_to_json(r) for r in reports]
    t_json = time.perf_counter() - t0

    t0 = time.perf_counter()
    for r in reports:
        render_text(r)
    t_text = time.perf_counter() - t0

    met = sum(1 for d in docs if d["criteria"]["diurnal_variation"]["met"])
    total = t_parse + t_analyse + t_json
    print(f"{n} patients x {DAYS} days, {n_blows} blows ({n_blows / n:.0f} per diary)")
    print(f"  parse    {t_parse:7.3f} s  ({n_blows / t_parse:,.0f} blows/s)")
    print(f"  analyse  {t_analyse:7.3f} s  ({n / t_analyse:,.0f} diaries/s)")
    print(f"  json     {t_json:7.3f} s")
    print(f"  total    {total:7.3f} s  ({total / n * 1000:.2f} ms per diary)")
    print(f"  text report {t_text:.3f} s; diurnal criterion met in {met} of {n} diaries")
    emit(
        "pef_diary",
        {
            "patients": n,
            "blows": n_blows,
            "parse_s": round(t_parse, 3),
            "analyse_s": round(t_analyse, 3),
            "json_s": round(t_json, 3),
            "total_s": round(total, 3),
            "ms_per_diary": round(total / n * 1000, 3),
            "text_report_s": round(t_text, 3),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
