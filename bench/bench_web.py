"""Server time of the care team's pages over 14 days of the demo's history (6 patients) on
SQLite: the queue, a patient's page with every chart, both reports and the fleet.

Each page is fetched through FastAPI's TestClient (the whole request: session, queries,
analytics, SVG, template), ``--rounds`` times after one warm-up. Usage:
python bench/bench_web.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient

from bench.common import emit, pct
from cloud_ingest.care import CareDirectory, Principal, Role
from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from cloud_ingest.web import create_web_app
from remon.demo_history import history_plan, seed_pef_diaries, seed_personal_bests

PATIENTS = 6
PAGES = {
    "queue": "/ui/queue",
    "patient (CGM, PEF, BP, kiosk)": "/ui/patients/demo-patient-0004",
    "report PEF": "/ui/patients/demo-patient-0004/reports/pef",
    "report AGP": "/ui/patients/demo-patient-0004/reports/agp",
    "fleet": "/ui/fleet",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{Path(tmp) / 'bench.db'}")
        service = IngestService(storage)
        care = CareDirectory(storage)
        admin = Principal(id="bench", name="bench", role=Role.ADMIN, team_ids=frozenset())
        care.put_team(admin, "demo", "Demo", now=now)
        for i in range(PATIENTS):
            care.put_patient(
                admin,
                f"demo-patient-{i + 1:04d}",
                team_id="demo",
                time_zone="Europe/Helsinki",
                now=now,
            )
        plan = history_plan(patients=PATIENTS, now=now)
        seed_personal_bests(storage, patients=PATIENTS, now=now)
        t0 = time.perf_counter()
        for msgs in plan.messages.values():
            service.ingest_batch([RawMessage(m.topic, m.payload, now) for m in msgs])
        load_s = time.perf_counter() - t0
        seed_pef_diaries(storage, patients=PATIENTS, now=now)
        app = create_web_app(service, IngestSettings(api_tokens={"tok": "svc.bench"}))
        results: dict[str, object] = {
            "patients": PATIENTS,
            "observations": plan.stats.observations,
            "history_ingest_s": round(load_s, 2),
            "rounds": rounds,
        }
        with TestClient(app) as client:
            r = client.post(
                "/ui/login", data={"token": "tok"}, headers={"Origin": "http://testserver"}
            )
            assert r.status_code == 200, r.text
            n = plan.stats.observations
            print(f"{PATIENTS} patients, {n} readings ingested in {load_s:.1f} s")
            for name, path in PAGES.items():
                assert client.get(path).status_code == 200, path  # warm-up
                times = []
                size = 0
                for _ in range(rounds):
                    t = time.perf_counter()
                    page = client.get(path)
                    times.append((time.perf_counter() - t) * 1000)
                    size = len(page.content)
                    assert page.status_code == 200
                p50, p95 = pct(times, 50), pct(times, 95)
                print(f"  {name:<32} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {size / 1024:6.0f} KiB")
                results[name] = {
                    "p50_ms": round(p50, 1),
                    "p95_ms": round(p95, 1),
                    "kib": round(size / 1024),
                }
        storage.close()
    emit("web", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
