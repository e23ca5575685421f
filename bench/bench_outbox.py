"""Outbox and relay throughput on this machine.

1. Durable enqueues/s: ``Outbox.put_many`` with batches of 1, 10, 100 and 500 messages (each
   with a cursor update), for ``synchronous=FULL`` and ``NORMAL``.
2. Drain rate: N messages of ~300 bytes from the outbox through the relay (QoS 1) to a private
   Mosquitto, with a counting subscriber in a separate process confirming every msg_id.

Prints human lines and a final JSON line. ``--quick`` shortens every phase.
Run: ``.venv/bin/python bench/bench_outbox.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig
from gateway.wire import OutboundMessage
from remon.brokers import MosquittoProcess

PAYLOAD = 300


def message(i: int) -> OutboundMessage:
    mid = f"{i:032x}"
    return OutboundMessage(
        topic="remon/v1/bench/dev-1/obs",
        payload=mid.encode() + b"x" * (PAYLOAD - 32),
        msg_id=mid,
    )


def bench_enqueue(tmp: Path, synchronous: str, batch: int, seconds: float) -> float:
    """Durable enqueues/s; only the ``put_many`` calls are timed, not building the messages."""
    path = tmp / f"enqueue-{synchronous}-{batch}.db"
    n = 0
    busy = 0.0
    i = 0
    with Outbox(path, synchronous=synchronous) as ob:  # type: ignore[arg-type]
        while busy < seconds:
            chunk = [message(j) for j in range(i, i + batch)]
            i += batch
            t = time.perf_counter()
            n += ob.put_many(chunk, cursors={"dev-1": str(i)})
            busy += time.perf_counter() - t
    path.unlink()
    return n / busy


SUBSCRIBER = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    port, expected = int(sys.argv[1]), int(sys.argv[2])
    seen = set()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
    c.on_connect = lambda c, u, f, rc, p: c.subscribe("remon/v1/bench/+/obs", qos=1)
    c.on_subscribe = lambda *a: print("subscribed", flush=True)
    c.on_message = lambda c, u, m: seen.add(m.payload[:32])
    c.max_inflight_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + float(sys.argv[3])
    while len(seen) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    print(f"received {len(seen)} {time.time():.6f}", flush=True)
    c.disconnect(); c.loop_stop()
    """
)


def bench_drain(tmp: Path, count: int, timeout: float) -> dict[str, float | int | bool]:
    with MosquittoProcess(tmp / "mosquitto") as broker, Outbox(tmp / "drain.db") as ob:
        for start in range(0, count, 500):
            ob.put_many([message(i) for i in range(start, min(count, start + 500))])
        sub = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(broker.port), str(count), str(timeout)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sub.stdout is not None
        assert sub.stdout.readline().strip() == "subscribed"
        relay = Relay(
            ob,
            RelayConfig(url=broker.url, client_id="bench-relay"),
            site="bench",
            agent_version="bench",
        )
        t0 = time.perf_counter()
        wall0 = time.time()
        relay.start()
        drained = relay.wait_drained(timeout)
        t_drained = time.perf_counter() - t0
        stats = relay.stats
        relay.stop()
        line = sub.stdout.readline().split()
        sub.wait(10)
        received = int(line[1])
        t_received = float(line[2]) - wall0
    return {
        "messages": count,
        "drained": drained,
        "drain_s": round(t_drained, 3),
        "drain_msgs_per_s": round(count / t_drained),
        "received": received,
        "received_s": round(t_received, 3),
        "end_to_end_msgs_per_s": round(received / t_received) if t_received > 0 else 0,
        "acked": stats.acked,
        "rejected": stats.rejected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (~15 s in all)")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0
    count = 10_000 if args.quick else 50_000
    result: dict[str, object] = {"payload_bytes": PAYLOAD, "quick": args.quick}
    enqueue: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as d:
        tmp = Path(d)
        for sync in ("FULL", "NORMAL"):
            enqueue[sync] = {}
            for batch in (1, 10, 100, 500):
                rate = bench_enqueue(tmp, sync, batch, seconds)
                enqueue[sync][str(batch)] = round(rate)
                print(f"enqueue synchronous={sync:<6} batch={batch:<4} {rate:>10,.0f} msg/s")
        result["enqueue_msgs_per_s"] = enqueue
        drain = bench_drain(tmp, count, timeout=40.0)
        print(
            f"drain {drain['messages']:,} x {PAYLOAD} B QoS 1 to Mosquitto: outbox empty after "
            f"{drain['drain_s']} s ({drain['drain_msgs_per_s']:,} msg/s); subscriber got "
            f"{drain['received']:,} distinct msg_ids after {drain['received_s']} s"
        )
        result["drain"] = drain
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
