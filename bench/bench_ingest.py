"""Ingest throughput vs a bare paho subscriber, and alert latency, against a private Mosquitto.

Throughput: N messages are queued in the broker for persistent sessions while their subscribers
are away; then the subscribers connect and we time how long they take to take all of them. The
same is done for a bare paho subscriber that only counts (MQTT 5, QoS 1) and for remon ingest
workers (decode, validate ids, dedupe, store, rules, ack after commit) into SQLite and
PostgreSQL: one worker process, and two and four sharing the load through an MQTT 5 shared
subscription (the scaling factor is their rate over one worker's). Messages carry 1 reading (the
worst case) or 20 (a batched envelope).

Alert latency: the ingest runs live with its API served by uvicorn (`remon ingest run`); a
publisher sends glucose readings at a steady 1000 obs/s and every 10th message carries a low
reading for a fresh patient; a poller reads GET /api/v1/alerts (the queue, as a care-team
client reads it) and records when each alert first appears. On SQLite and on PostgreSQL.

Usage: python bench/bench_ingest.py [--quick] [--pg URL]
       [--no-latency] [--db sqlite,postgres] [--workers 1,2,4] [--shapes 1,20]
       [--links process,thread] [--repeat N]

The selection options run a part of the table (e.g. one worker into PostgreSQL, both shapes,
three times: ``--no-latency --db postgres --workers 1 --repeat 3``); the bare subscriber is
measured again before each repeat, so each run is compared with the broker as it is then.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import emit, glucose_envelopes, pct
from cloud_ingest.consumer import SHARE_GROUP, Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.storage import open_storage
from gateway.wire import OBS_SUBSCRIPTION, OutboundMessage
from remon.brokers import MosquittoProcess, free_port


def _session_props() -> Properties:
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = 4000
    return p


def drop_session(port: int, client_id: str) -> None:
    """End a worker's persistent session: a left-over session in the share group would keep
    taking its share of later runs' messages while nobody reads it."""
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 0
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port, clean_start=True, properties=p)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def prime_session(port: int, client_id: str, topic: str = OBS_SUBSCRIPTION) -> None:
    """Create a persistent session subscribed to observations, then leave."""
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port, clean_start=True, properties=_session_props())
    c.loop_start()
    c.subscribe(topic, qos=1)
    done.wait(5)
    c.disconnect()
    c.loop_stop()


def publish_all(port: int, msgs: list[OutboundMessage]) -> None:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    for i, m in enumerate(msgs):
        infos.append(c.publish(m.topic, m.payload, qos=1))
        if i % 1000 == 999:
            infos[-1].wait_for_publish(30)
    for info in infos:
        info.wait_for_publish(30)
    c.disconnect()
    c.loop_stop()


def bare_subscriber(port: int, msgs: list[OutboundMessage]) -> float:
    cid = f"bare-{time.monotonic_ns()}"
    prime_session(port, cid)
    publish_all(port, msgs)
    n = len(msgs)
    got = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(c: Any, u: Any, m: Any) -> None:
        nonlocal got
        if not first:
            first.append(time.perf_counter())
        got += 1
        if got >= n:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", port, clean_start=False, properties=_session_props())
    c.loop_start()
    done.wait(300)
    t1 = time.perf_counter()
    c.disconnect()
    c.loop_stop()
    assert got >= n, f"bare subscriber got {got}/{n}"
    return (n - 1) / (t1 - first[0])  # from the first message on: start-up is not throughput


def _worker(
    index: int, port: int, db_url: str, shared: bool, link: str, go: Any, count: Any, first: Any
) -> None:
    """One ingest worker process: the production consumer and service; reports its stored total."""
    service = IngestService(open_storage(db_url))
    consumer = Consumer(
        service,
        ConsumerConfig(
            url=f"mqtt://127.0.0.1:{port}",
            client_id=f"w{index}",
            protocol="5",
            shared=shared,
            link="thread" if link == "thread" else "process",
        ),
        on_result=lambda r: _add(count, first, r.observations),
    )
    go.wait()
    consumer.start()
    while True:
        time.sleep(3600)


def _add(counter: Any, first: Any, n: int) -> None:
    """Count stored readings; the first commit of the run sets the clock's start."""
    with counter.get_lock():
        if counter.value == 0 and n:
            first[0] = time.perf_counter()
            first[1] = n
        counter.value += n


def ingest_run(
    port: int, db_url: str, msgs: list[OutboundMessage], obs_total: int, workers: int, link: str
) -> dict[str, float]:
    """Steady rate from the first commit on (readings after the first batch over the time after
    it): process start, connection and the first batch's window are start-up, not throughput,
    as for the bare subscriber (timed from its first message)."""
    ctx = mp.get_context("spawn")
    shared = workers > 1
    sub = f"$share/{SHARE_GROUP}/{OBS_SUBSCRIPTION}" if shared else OBS_SUBSCRIPTION
    open_storage(db_url).close()  # migrate once, before the workers race to
    for i in range(workers):
        prime_session(port, f"w{i}", topic=sub)
    publish_all(port, msgs)
    go = ctx.Event()
    count = ctx.Value("q", 0)
    first = ctx.Array("d", 2)  # time of the first commit (perf_counter), readings in it
    procs = [
        ctx.Process(
            target=_worker, args=(i, port, db_url, shared, link, go, count, first), daemon=True
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # imports and storage opened in every worker
    go.set()
    deadline = time.monotonic() + 600
    while count.value < obs_total and time.monotonic() < deadline:
        time.sleep(0.01)
    t1 = time.perf_counter()
    for p in procs:
        p.terminate()
        p.join(10)
    for i in range(workers):
        drop_session(port, f"w{i}")
    assert count.value >= obs_total, f"stored {count.value}/{obs_total}"
    obs_per_s = (obs_total - first[1]) / (t1 - first[0])
    per_msg = obs_total / len(msgs)
    return {"msg_per_s": obs_per_s / per_msg, "obs_per_s": obs_per_s}


def alert_latency(
    port: int, db_url: str, rate_obs: int, seconds: float, obs_per_msg: int, tmp: Path
) -> dict[str, float]:
    """Publish → alert visible through the API, with the ingest as its own process.

    The cloud side is the product's ``remon ingest run`` (consumer + API in one process); this
    process plays the hubs (publisher) and the care team's client (poller).
    """
    token = "bench-token"
    api_port = free_port()
    env = {
        **os.environ,
        "REMON_API_TOKENS": json.dumps({token: "bench"}),
        "REMON_CLIENT_ID": f"lat-{time.monotonic_ns()}",
    }
    log = (tmp / "latency-ingest.log").open("wb")
    cloud = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "remon.cli",
            "ingest",
            "run",
            "--database",
            db_url,
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--port",
            str(api_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{api_port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get("/api/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or cloud.poll() is not None:
            raise RuntimeError("the ingest did not come up; see latency-ingest.log")
        time.sleep(0.1)
    time.sleep(1.0)  # the consumer subscribes after the API answers

    msgs_per_s = rate_obs / obs_per_msg
    n_msgs = int(msgs_per_s * seconds)
    msgs = glucose_envelopes(n_msgs, obs_per_msg, sites=n_msgs, low_share=0.0, tag="lat")
    # every 10th message: the first reading is a low for that message's own fresh patient
    trig = set(range(0, n_msgs, 10))
    low = glucose_envelopes(len(trig), obs_per_msg, sites=len(trig), low_share=1.0, tag="lat-low")
    li = iter(low)
    plan = [(next(li), True) if i in trig else (m, False) for i, m in enumerate(msgs)]
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            r = client.get("/api/v1/alerts", params={"state": "open", "limit": 50})
            now = time.perf_counter()
            for a in r.json():
                seen_at.setdefault(a["subject_ref"], now)
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"latpub-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t_start = time.perf_counter()
    for i, (m, is_trigger) in enumerate(plan):
        target = t_start + i / msgs_per_s
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if is_trigger:
            subject = m.topic.split("/")[2].replace("site", "p")
            sent_at[subject] = time.perf_counter()
        c.publish(m.topic, m.payload, qos=1)
    deadline = time.monotonic() + 10
    while len(seen_at.keys() & sent_at.keys()) < len(sent_at) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    poller.join(5)
    client.close()
    c.disconnect()
    c.loop_stop()
    cloud.send_signal(signal.SIGTERM)
    cloud.wait(20)
    log.close()
    lat = [(seen_at[s] - t) * 1000 for s, t in sent_at.items() if s in seen_at]
    return {
        "alerts": float(len(lat)),
        "expected": float(len(sent_at)),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
    }


def make_pg_db(admin_url: str) -> tuple[str, sa.Engine, str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"remon_bench_{os.getpid()}_{time.monotonic_ns() % 10_000_000}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return (
        sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False),
        admin,
        name,
    )


def drop_pg_db(admin: sa.Engine, name: str) -> None:
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def _database(args: argparse.Namespace, label: str, sqlite_file: Path) -> Iterator[str]:
    """A fresh database for one run: ``sqlite_file``, or a PostgreSQL database dropped after."""
    if label == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    db_url, admin, name = make_pg_db(args.pg)
    try:
        yield db_url
    finally:
        drop_pg_db(admin, name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--pg",
        default=os.environ.get(
            "REMON_TEST_PG_URL", "postgresql+psycopg://root@/postgres?host=/var/run/postgresql"
        ),
    )
    ap.add_argument("--no-latency", action="store_true", help="throughput runs only")
    ap.add_argument("--db", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument("--shapes", default="1,20", help="comma-separated readings per message (1, 20)")
    ap.add_argument(
        "--links",
        default="process",
        help="where the MQTT link runs: process (the default), thread (the one-process form, "
        "one worker only) or both, comma-separated",
    )
    ap.add_argument("--repeat", type=int, default=1, help="throughput rounds (bare + ingest)")
    args = ap.parse_args()
    scale = 0.25 if args.quick else 1.0
    # (readings per message, messages): about 5 s of work per run
    sizes = {1: int(20_000 * scale), 20: int(3_000 * scale)}
    shapes = [(int(k), sizes[int(k)]) for k in args.shapes.split(",")]
    dbs = [d for d in args.db.split(",") if d]
    worker_counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory() as tmp, MosquittoProcess(Path(tmp) / "mq") as broker:
        if not args.no_latency:
            # latency first, on a quiet broker and database: right after the throughput runs
            # (broker persistence and PostgreSQL autovacuum settling) single stalls dominate p99
            _latency(args, broker.port, Path(tmp), dbs, results)
        for rnd in range(args.repeat):
            _throughput(args, broker.port, Path(tmp), shapes, dbs, worker_counts, rnd, results)
    emit("ingest", results)


def _latency(
    args: argparse.Namespace, port: int, tmp: Path, dbs: list[str], results: dict[str, Any]
) -> None:
    rate = 1000
    for label in dbs:
        with _database(args, label, tmp / "lat.db") as db_url:
            seconds = 5 if args.quick else 20
            lat = alert_latency(port, db_url, rate, seconds, 10, tmp)
        results[f"alert_latency_{rate}obs_s_{label}"] = lat
        print(
            f"alert latency at {rate} obs/s ({label}, publish → queue API): "
            f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, "
            f"max {lat['max_ms']:.0f} ms ({lat['alerts']:.0f}/{lat['expected']:.0f} alerts)",
            flush=True,
        )


def _throughput(
    args: argparse.Namespace,
    port: int,
    tmp: Path,
    shapes: list[tuple[int, int]],
    dbs: list[str],
    worker_counts: list[int],
    rnd: int,
    results: dict[str, Any],
) -> None:
    """One round: the bare subscriber per shape, then every selected ingest run."""
    bare: dict[int, float] = {}
    for k, n in shapes:
        bare[k] = bare_subscriber(port, glucose_envelopes(n, k, tag=f"bare{k}"))
        print(f"bare paho subscriber, {k:2d} obs/msg (QoS 1, counting only): {bare[k]:8.0f} msg/s")
    results.setdefault("bare_rounds", []).append({str(k): v for k, v in bare.items()})
    results["bare_msg_per_s"] = {str(k): v for k, v in bare.items()}
    runs = [
        (label, w, k, n, link)
        for label in dbs
        for w in worker_counts
        for k, n in shapes
        for link in args.links.split(",")
        if link == "process" or w == 1
    ]
    for label, workers, k, n, link in runs:
        with _database(args, label, tmp / f"bench-{rnd}-{workers}-{k}-{link}.db") as db_url:
            msgs = glucose_envelopes(n, k, tag=f"{label}{workers}{k}{link}r{rnd}")
            r = ingest_run(port, db_url, msgs, n * k, workers, link)
        ratio = r["msg_per_s"] / bare[k]
        single = next(
            (
                x["obs_per_s"]
                for x in results["runs"]
                if (x["db"], x["workers"], x["obs_per_msg"], x["round"], x["link"])
                == (label, 1, k, rnd, link)
            ),
            r["obs_per_s"],
        )
        scaling = r["obs_per_s"] / single
        results["runs"].append(
            {
                "db": label,
                "workers": workers,
                "obs_per_msg": k,
                "round": rnd,
                "link": link,
                **r,
                "ratio_vs_bare": ratio,
                "scaling_vs_1_worker": scaling,
            }
        )
        print(
            f"ingest → {label:8s} {workers} worker{'s' if workers > 1 else ' '} "
            f"(link: {link:7s}) "
            f"{k:2d} obs/msg: {r['msg_per_s']:7.0f} msg/s {r['obs_per_s']:8.0f} obs/s "
            f"({ratio:4.0%} of bare, {scaling:.2f}x one worker)",
            flush=True,
        )


if __name__ == "__main__":
    main()
