"""Serial devices: decode throughput, and what the agent costs with serial devices attached.

1. Decode, in-process, one core. ASTM: frames/s through ``AstmReceiver.feed`` over a Contour
   memory dump (ENQ, H, P, 500 R, L, EOT in 4 KiB reads; the receiver's ACKs ignored) and
   results/s through ``AstmMessageAssembler`` + ``result_to_observation``. Bridge boards:
   frames/s through ``FrameDecoder.feed`` + ``decode_message`` for FLOW_SAMPLES (50 samples)
   and DISPENSER_EVENT frames, and ``BridgeHost.feed`` over a whole 1 kHz blow exactly as the
   PEF board simulator sends it (HELLO, HEARTBEAT, BLOW_START, FLOW_SAMPLES..., BLOW_END).
2. The agent as deployed: ``remon agent run`` (``[serial] backend = "tty"``) in its own process
   reads simulators that ``remon serial-sim`` runs in another process behind real ptys, and
   relays to a private Mosquitto, where a bare paho subscriber decodes every observation. CPU %
   (psutil ``cpu_times`` deltas over the window after a warm-up; 100 % = one core) and RSS of
   the agent and of the simulator process, for:

   a. a PEF board streaming a blow at 1 kHz every 7 s (blows counted at the broker);
   b. idle devices: an ASTM meter (its 50 readings sent once, at connect), a dispenser (doses
      a day apart), a PEF board (a blow an hour), heartbeats only after the warm-up;
   c. 100 readings/s: four kiosk peripheral boards at 25 readings/s each. After the window the
      run waits for every reading at the broker, stops the simulators (their exit line says
      how many distinct readings they put on the wire), waits until the agent's outbox is
      empty, and compares with the distinct obs_ids at the broker: duplicates (QoS 1 may
      redeliver) are counted apart, and lost must be 0.

The agent runs with its production defaults (``outbox_synchronous = "FULL"``: one fsync per
commit; a board's event is committed before it is ACKed). Prints human lines, a table and one
``JSON {"bench": "serial", "figure": ...}`` line per figure.

Usage: python bench/bench_serial.py [--quick] [--window S] [--warmup S] [--decode-s S]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import emit
from device_profiles.events import EventKind
from device_profiles.serial import astm
from device_profiles.serial.sim_astm import contour_readings, header_record, result_record
from firmware_bridges import messages as m
from firmware_bridges.framing import Frame, FrameDecoder
from firmware_bridges.host import BlowCurve, BridgeHost, Transmit
from firmware_bridges.pef_curves import pef_flow_curve
from firmware_bridges.sim_boards import PefBoardSim
from gateway.outbox import Outbox
from gateway.wire import OBS_SUBSCRIPTION, WireError, decode_observations
from remon.brokers import MosquittoProcess

ROOT = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/Helsinki")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
METER_T0 = T0.replace(tzinfo=None)  # a meter's clock carries no zone
READ = 4096  # bytes per read, as the serial transport reads (edge_agent.serial_port)
KIOSK_BOARDS = 4
KIOSK_EVERY_S = 0.04  # 25 readings/s per board, 100/s in all


# --------------------------------------------------------------------------- 1. decode


def per_second(fn: Callable[[], object], seconds: float) -> float:
    """Calls of ``fn`` per second (each call handles a whole stream)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while (dt := time.perf_counter() - t0) < seconds or n < 3:
        fn()
        n += 1
    return n / dt


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + READ] for i in range(0, len(data), READ)]


def astm_dump(n: int) -> tuple[bytes, list[str]]:
    """A Contour memory dump of ``n`` readings as the meter sends it, and its records."""
    readings = contour_readings(
        n, seed=1, start=METER_T0 - timedelta(days=200), every=timedelta(hours=6)
    )
    records = [
        header_record(
            model="7390",
            serial="7390-0000001",
            firmware="01.24",
            count=n,
            unit="mmol/L",
            meter_time=METER_T0,
        ),
        "P|1",
        *(result_record(i + 1, r) for i, r in enumerate(readings)),
        "L|1||N",
    ]
    frames = astm.message_frames(records)
    return bytes([astm.ENQ]) + b"".join(frames) + bytes([astm.EOT]), records


def bridge_frames(msgs: list[m.BridgeMessage]) -> bytes:
    return b"".join(m.encode_message(msg, seq) for seq, msg in enumerate(msgs))


def decode_bridge(parts: list[bytes]) -> int:
    dec, n = FrameDecoder(), 0
    for part in parts:
        for f in dec.feed(part):
            assert isinstance(f, Frame), f
            m.decode_message(f.msg_type, f.payload)
            n += 1
    return n


def blow_stream() -> tuple[bytes, int]:
    """What a PEF board simulator sends, from power-up until the host holds one 1 kHz blow."""
    curve = pef_flow_curve(pef_l_min=450, sample_rate_hz=1000, fvc_l=4.0, noise_l_s=0.03, seed=1)
    now = 0.0
    board = PefBoardSim(
        "PEF-00001", blows=[(0.5, curve)], wall_clock=lambda: T0 + timedelta(seconds=now)
    )
    host = BridgeHost(expected_kind=m.BoardKind.PEF_SENSOR)
    sent = bytearray()
    while now < 60:
        out = board.poll(now)
        sent += out
        now_ms = int((T0 + timedelta(seconds=now)).timestamp() * 1000)
        for ev in host.feed(out, now_ms) if out else host.poll(now_ms):
            if isinstance(ev, Transmit):
                board.receive(ev.data, now)
            elif isinstance(ev, BlowCurve):
                return bytes(sent), len(ev.flow_l_s)
        now += 0.005
    raise RuntimeError("the simulated board sent no complete blow")


def bench_decode(seconds: float) -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = []

    def report(name: str, what: str, calls: float, frames: int, size: int, **extra: Any) -> None:
        fps, mbs = calls * frames, calls * size / 1e6
        print(f"{what:52s} {fps:10,.0f} frames/s {mbs:7.2f} MB/s")
        figures.append(
            {"figure": name, "frames_per_s": round(fps), "mb_per_s": round(mbs, 3), **extra}
        )

    # ASTM link layer
    stream, records = astm_dump(500)
    parts = chunks(stream)

    def astm_link() -> list[astm.AstmEvent]:
        rx, out = astm.AstmReceiver(), []
        for part in parts:
            out += rx.feed(part)
        return out

    events = astm_link()
    texts = [e.text for e in events if isinstance(e, astm.RecordReceived)]
    assert texts == records, "the dump did not decode to its records"
    n_frames = len(astm.message_frames(records))
    report(
        "astm_link",
        "ASTM E1381 AstmReceiver.feed (Contour dump)",
        per_second(astm_link, seconds),
        n_frames,
        len(stream),
    )

    def astm_records() -> int:
        asm = astm.AstmMessageAssembler()
        for t in texts:
            asm.add(t)
        msg = asm.end(True)
        assert msg is not None
        assert msg.terminated
        assert not msg.errors
        obs = [
            astm.result_to_observation(r, tz=TZ, clock_offset_s=30.0, simulated=False)
            for r in msg.results
        ]
        return len(obs)

    n_results = astm_records()
    rps = per_second(astm_records, seconds) * n_results
    print(f"{'ASTM E1394 assembler + result_to_observation':52s} {rps:10,.0f} results/s")
    figures.append({"figure": "astm_records", "results_per_s": round(rps)})

    # bridge frames
    rng = random.Random(1)
    flow = bridge_frames(
        [
            m.FlowSamples(
                blow_id=1,
                first_index=50 * i,
                samples=tuple(rng.randint(-200, 12_000) for _ in range(50)),
            )
            for i in range(1000)
        ]
    )
    flow_parts = chunks(flow)
    calls = per_second(lambda: decode_bridge(flow_parts), seconds)
    report(
        "bridge_flow_samples",
        "bridge FrameDecoder + decode_message, FLOW_SAMPLES x50",
        calls,
        1000,
        len(flow),
        samples_per_s=round(calls * 50_000),
    )
    disp = bridge_frames(
        [
            m.DispenserEvent(
                event_seq=i,
                kind=EventKind.DOSE_TAKEN,
                dose_id=f"20260601T0800-{i:04d}",
                scheduled_unix_s=1_780_300_800 + 60 * i,
                actual_unix_s=1_780_300_900 + 60 * i,
                doses_left=50,
            )
            for i in range(1000)
        ]
    )
    disp_parts = chunks(disp)
    report(
        "bridge_dispenser_event",
        "bridge FrameDecoder + decode_message, DISPENSER_EVENT",
        per_second(lambda: decode_bridge(disp_parts), seconds),
        1000,
        len(disp),
    )

    # the host over a whole blow
    blow, n_samples = blow_stream()
    blow_parts = chunks(blow)
    n_blow_frames = sum(isinstance(f, Frame) for f in FrameDecoder().feed(blow))
    now_ms = int(T0.timestamp() * 1000)

    def host_blow() -> None:
        host = BridgeHost(expected_kind=m.BoardKind.PEF_SENSOR)
        got = [
            ev for part in blow_parts for ev in host.feed(part, now_ms) if isinstance(ev, BlowCurve)
        ]
        assert len(got) == 1
        assert len(got[0].flow_l_s) == n_samples

    calls = per_second(host_blow, seconds)
    report(
        "bridge_host_blow",
        f"BridgeHost.feed, 1 kHz blow ({n_samples} samples, {n_blow_frames} frames)",
        calls,
        n_blow_frames,
        len(blow),
        blows_per_s=round(calls, 1),
        realtime_factor=round(calls * n_samples / 1000),
    )
    print(f"{'':52s} = {calls * n_samples / 1000:,.0f} x real time for one 1 kHz board")
    return figures


# --------------------------------------------------------------------------- 2. the agent


class Subscriber:
    """A bare paho client decoding every observation at the broker: (arrival, obs_id, measure)
    per site."""

    def __init__(self, port: int) -> None:
        self.obs: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
        self.bad = 0
        self._lock = threading.Lock()
        subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-serial-counter", protocol=mqtt.MQTTv5
        )
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe(OBS_SUBSCRIPTION, qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the counting subscriber could not subscribe")
        self._client = c

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        t = time.monotonic()
        try:
            env = decode_observations(msg.topic, msg.payload)
        except WireError:
            self.bad += 1
            return
        with self._lock:
            self.obs[env.site] += [(t, w.obs_id, w.observation.measure) for w in env.observations]

    def seen(self, site: str, measure: str | None = None) -> list[tuple[float, str, str]]:
        with self._lock:
            return [o for o in self.obs[site] if measure is None or o[2] == measure]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass(frozen=True)
class Device:
    id: str
    kind: str
    virtual: dict[str, float | int | str]
    subject: str = "p-0001"


def _toml(v: float | int | str) -> str:
    return json.dumps(v)  # a JSON string or number is a TOML one


def write_configs(d: Path, site: str, broker_url: str, devices: list[Device]) -> tuple[Path, Path]:
    """The simulators' configuration and the agent's: same absolute ports."""
    d.mkdir(parents=True)
    head = f'[agent]\nsite = "{site}"\nlog_level = "info"\n'
    sim = [head + f'data_dir = {_toml(str(d / "sim"))}\n\n[serial]\nbackend = "virtual"\n']
    agent = [
        head + f'data_dir = {_toml(str(d / "agent"))}\n\n[mqtt]\nurl = "{broker_url}"\n\n'
        '[serial]\nbackend = "tty"\nreopen_max_s = 1\n'
    ]
    for dev in devices:
        table = (
            f'\n[[devices]]\nid = "{dev.id}"\nkind = "{dev.kind}"\nsubject = "{dev.subject}"\n'
            f"port = {_toml(str(d / 'ports' / dev.id))}\n"
        )
        agent.append(table)
        sim.append(table + "\n[devices.virtual]\n")
        sim += [f"{k} = {_toml(v)}\n" for k, v in dev.virtual.items()]
    (d / "sim.toml").write_text("".join(sim))
    (d / "agent.toml").write_text("".join(agent))
    return d / "sim.toml", d / "agent.toml"


def _remon(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(  # our own command
        [sys.executable, "-m", "remon.cli", *args], cwd=ROOT, text=True, **kw
    )


def usage(
    procs: dict[str, psutil.Process], seconds: float
) -> tuple[dict[str, float], float, float]:
    """CPU % (of one core) and RSS (MB) of each process over ``seconds``; the window's bounds."""
    before = {k: p.cpu_times() for k, p in procs.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    out: dict[str, float] = {}
    for k, p in procs.items():
        a, b = before[k], p.cpu_times()
        out[f"{k}_cpu_pct"] = round(100 * (b.user - a.user + b.system - a.system) / (t1 - t0), 2)
        out[f"{k}_rss_mb"] = round(p.memory_info().rss / 2**20, 1)
    return out, t0, t1


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


class Scenario:
    """One serial-sim process and one agent process: started on entry, measured, stopped; on
    exit whatever still runs is killed."""

    def __init__(
        self, tmp: Path, name: str, broker_url: str, sub: Subscriber, devices: list[Device]
    ) -> None:
        self.name, self.site, self.sub, self.devices = name, f"bench-{name}", sub, devices
        self.dir = tmp / name
        self.sim_cfg, self.agent_cfg = write_configs(self.dir, self.site, broker_url, devices)
        self.outbox = self.dir / "agent" / "outbox.sqlite"
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Scenario:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self.sim_log: TextIO = (self.dir / "sim.log").open("w")
        self.agent_log: TextIO = (self.dir / "agent.log").open("w")
        self.sim = _remon(
            "serial-sim", str(self.sim_cfg), stdout=subprocess.PIPE, stderr=self.sim_log
        )
        self.procs.append(self.sim)
        assert self.sim.stdout is not None
        for dev in self.devices:
            line = self.sim.stdout.readline()
            if not line.startswith(dev.id + " "):
                raise RuntimeError(f"serial-sim: {line!r}\n{_tail(self.dir / 'sim.log')}")
        self.agent = _remon(
            "agent",
            "run",
            "--config",
            str(self.agent_cfg),
            stdout=subprocess.DEVNULL,
            stderr=self.agent_log,
        )
        self.procs.append(self.agent)
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in ("sim_log", "agent_log"):
            if hasattr(self, log):
                getattr(self, log).close()

    def measure(self, warmup: float, window: float) -> tuple[dict[str, float], float, float]:
        time.sleep(max(0.0, self.started + warmup - time.monotonic()))
        self._alive()
        procs = {"agent": psutil.Process(self.agent.pid), "sim": psutil.Process(self.sim.pid)}
        result = usage(procs, window)
        self._alive()
        return result

    def _alive(self) -> None:
        for name, p, log in (
            ("agent", self.agent, "agent.log"),
            ("serial-sim", self.sim, "sim.log"),
        ):
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{_tail(self.dir / log)}")

    def stop_sim(self) -> dict[str, Any]:
        """SIGTERM the simulators; their exit line (per-device counters, run time)."""
        self.sim.send_signal(signal.SIGTERM)
        out, _ = self.sim.communicate(timeout=20)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.sim.returncode or not lines:
            raise RuntimeError(
                f"serial-sim exit {self.sim.returncode}:\n{_tail(self.dir / 'sim.log')}"
            )
        doc: dict[str, Any] = json.loads(lines[-1])
        return doc

    def stop_agent(self) -> None:
        """Once its outbox is empty (everything confirmed by the broker)."""

        def drained() -> bool:
            with Outbox(self.outbox) as ob:
                return ob.pending() == 0

        if not wait_until(drained, 30):
            print(f"  warning: {self.name}: the agent's outbox did not drain in 30 s")
        time.sleep(0.5)  # deliveries to the subscriber trail the broker's PUBACK a little
        self.agent.send_signal(signal.SIGTERM)
        try:
            self.agent.wait(20)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            self.agent.wait()

    def counted(self, measure: str | None = None) -> dict[str, int]:
        seen = self.sub.seen(self.site, measure)
        unique = len({o[1] for o in seen})
        return {"received_unique": unique, "duplicates": len(seen) - unique}

    def in_window(self, t0: float, t1: float, measure: str | None = None) -> int:
        return len({o[1] for o in self.sub.seen(self.site, measure) if t0 <= o[0] <= t1})


def _events(counters: dict[str, Any], key: str, kind: str) -> int:
    return sum(int(c.get(key, {}).get(kind, 0)) for c in counters.values())


def scenario_pef(
    tmp: Path, url: str, sub: Subscriber, warmup: float, window: float
) -> dict[str, Any]:
    devices = [
        Device("pef", "serial.pef-board", {"blow_every_s": 7, "sample_rate_hz": 1000, "seed": 1})
    ]
    with Scenario(tmp, "pef", url, sub, devices) as s:
        use, t0, t1 = s.measure(warmup, window)
        # Stop between two blows (a blow lasts 2-5 s, they start 7 s apart): at most 2 s after
        # one landed, else after the next one lands.
        landed = [o[0] for o in sub.seen(s.site, "pef")]
        if not landed or time.monotonic() - max(landed) > 2:
            wait_until(lambda: len(sub.seen(s.site, "pef")) > len(landed), 10)
        doc = s.stop_sim()
        s.stop_agent()
    counters = doc["devices"]
    sent = _events(counters, "events_sent", "blow_end")
    got = s.counted("pef")
    return {
        "figure": "agent_pef_board_1khz",
        "window_s": window,
        **use,
        "blows_in_window": s.in_window(t0, t1, "pef"),
        "sent": sent,
        "acked": _events(counters, "events_acked", "blow_end"),
        **got,
        "lost": max(0, sent - got["received_unique"]),
        "serial_bytes_per_s": round(counters["pef"]["bytes_to_host"] / doc["run_s"]),
    }


def scenario_idle(
    tmp: Path, url: str, sub: Subscriber, warmup: float, window: float
) -> dict[str, Any]:
    readings = 50
    devices = [
        Device("contour", "serial.glucose-astm", {"records": readings, "seed": 1}),
        Device("dispenser", "serial.dispenser", {"dose_every_s": 86_400, "seed": 2}),
        Device("pef", "serial.pef-board", {"blow_every_s": 3600, "seed": 3}),
    ]
    with Scenario(tmp, "idle", url, sub, devices) as s:
        use, t0, t1 = s.measure(warmup, window)
        s.stop_sim()
        s.stop_agent()
    got = s.counted()
    return {
        "figure": "agent_idle_serial_devices",
        "window_s": window,
        **use,
        "obs_in_window": s.in_window(t0, t1),
        "sent": readings,
        **got,
        "lost": max(0, readings - got["received_unique"]),
    }


def scenario_load(
    tmp: Path, url: str, sub: Subscriber, warmup: float, window: float
) -> dict[str, Any]:
    # readings from the boards' start until ~2 s after the window ends
    records = math.ceil((warmup + window + 2) / KIOSK_EVERY_S)
    devices = [
        Device(
            f"height{i}",
            "serial.kiosk-peripheral",
            {"record_every_s": KIOSK_EVERY_S, "records": records, "seed": i},
            subject=f"kiosk-{i}",
        )
        for i in range(1, KIOSK_BOARDS + 1)
    ]
    expected = KIOSK_BOARDS * records
    with Scenario(tmp, "load", url, sub, devices) as s:
        use, t0, t1 = s.measure(warmup, window)
        wait_until(lambda: s.counted()["received_unique"] >= expected, 20)
        counters = s.stop_sim()["devices"]
        s.stop_agent()
    sent = _events(counters, "events_sent", "measurement")
    got = s.counted()
    return {
        "figure": "agent_100_readings_per_s",
        "window_s": window,
        **use,
        "readings_per_s_in_window": round(s.in_window(t0, t1) / (t1 - t0), 1),
        "configured": expected,
        "sent": sent,
        "acked": _events(counters, "events_acked", "measurement"),
        **got,
        "lost": max(0, sent - got["received_unique"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows (~35 s in all)")
    ap.add_argument("--window", type=float, help="measuring window per scenario, s (20)")
    ap.add_argument("--warmup", type=float, help="warm-up before each window, s (5)")
    ap.add_argument("--decode-s", type=float, help="seconds per decode figure (0.7)")
    args = ap.parse_args()
    window = args.window or (5.0 if args.quick else 20.0)
    warmup = args.warmup or (3.0 if args.quick else 5.0)
    decode_s = args.decode_s or (0.3 if args.quick else 0.7)

    figures = bench_decode(decode_s)
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-serial-") as d,
        MosquittoProcess(Path(d) / "mq") as broker,
    ):
        sub = Subscriber(broker.port)
        try:
            for label, run in (
                ("PEF board, 1 kHz blow every 7 s", scenario_pef),
                ("idle: ASTM meter, dispenser, PEF board", scenario_idle),
                (f"{KIOSK_BOARDS} kiosk boards, 100 readings/s", scenario_load),
            ):
                r = run(Path(d), broker.url, sub, warmup, window)
                r["scenario"] = label
                rows.append(r)
                print(
                    f"{label:40s} agent {r['agent_cpu_pct']:5.1f} % CPU {r['agent_rss_mb']:6.1f} MB"
                    f" | serial-sim {r['sim_cpu_pct']:5.1f} % CPU {r['sim_rss_mb']:6.1f} MB",
                    flush=True,
                )
        finally:
            sub.close()
    print()
    row = "{:40s} {:>9s} {:>9s} {:>8s} {:>11s} {:>6s} {:>6s} {:>4s} {:>4s}"
    head = row.format(
        "scenario",
        "agent CPU",
        "agent RSS",
        "sim CPU",
        "in window",
        "sent",
        "unique",
        "dup",
        "lost",
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "blows_in_window" in r:
            in_window = f"{r['blows_in_window']} blows"
        elif "obs_in_window" in r:
            in_window = f"{r['obs_in_window']} obs"
        else:
            in_window = f"{r['readings_per_s_in_window']:.0f} obs/s"
        print(
            row.format(
                r["scenario"],
                f"{r['agent_cpu_pct']:.1f} %",
                f"{r['agent_rss_mb']:.0f} MB",
                f"{r['sim_cpu_pct']:.1f} %",
                in_window,
                *(str(r[k]) for k in ("sent", "received_unique", "duplicates", "lost")),
            )
        )
    print(
        f"(window {window:g} s after a {warmup:g} s warm-up; CPU in % of one core; sent: "
        "distinct readings the simulators put on the wire; unique: distinct obs_ids at the broker)"
    )
    for f in figures + rows:
        emit("serial", f)
    bad = [r["scenario"] for r in rows if r["lost"]]
    if bad:
        print(f"readings lost in: {', '.join(bad)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
