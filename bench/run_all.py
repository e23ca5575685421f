"""Run every benchmark, print their numbers and write their JSON to bench/results/latest.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "bench_decode.py",
    "bench_outbox.py",
    "bench_ingest.py",
    "bench_serial.py",
    "bench_pef.py",
    "bench_pef_diary.py",
    "bench_cgm.py",
    "bench_cgm_stream.py",
    "bench_web.py",
]


def _is_json(line: str) -> bool:
    return line.startswith(("JSON {", "{"))


def _json(name: str, line: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(line.removeprefix("JSON "))
    doc.setdefault("bench", name.removeprefix("bench_").removesuffix(".py"))
    return doc


def main() -> int:
    extra = sys.argv[1:]
    results = []
    for name in BENCHES:
        print(f"== {name}", flush=True)
        proc = subprocess.run(
            [sys.executable, str(HERE / name), *extra], check=False, capture_output=True, text=True
        )
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
        if proc.returncode:
            print(f"{name} failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
        results += [_json(name, line) for line in proc.stdout.splitlines() if _is_json(line)]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
