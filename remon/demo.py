"""``remon demo``: a fleet of simulated patients' devices → agents → broker → ingest → alerts.

Everything runs on loopback in one process on embedded defaults (a private Mosquitto when one is
installed, else the in-process amqtt broker; SQLite in a data directory). ``--broker`` and
``--database`` point the same roles at an operated Mosquitto and PostgreSQL instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cloud_ingest.care import CareDirectory, Principal, Role
from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import Storage, open_storage
from cloud_ingest.web import create_web_app
from device_profiles.observation import Observation, Provenance, QualityFlag
from edge_agent.agent import Agent
from edge_agent.config import (
    AgentConfig,
    AgentSection,
    BleSection,
    DeviceSection,
    KioskSection,
    MqttSection,
    SerialSection,
    VirtualDeviceSection,
)
from edge_agent.simulators import sim_identity
from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig
from gateway.wire import OutboundMessage, Subject, encode_observations
from remon.brokers import EmbeddedBroker, MosquittoProcess, free_port, mosquitto_binary

log = logging.getLogger("remon.demo")

MqttProtocol = Literal["auto", "5", "3.1.1"]

#: The demo fleet: one home hub (site) per patient, each with a profile that makes some of
#: their readings cross the default thresholds (DOMAIN.md) so the queue fills with alerts.
FLEET_PROFILES = ("normal", "hypo-prone", "hypertensive", "hyperglycaemic", "hypoxic", "febrile")
DEVICE_KINDS = ("sim.glucose-meter", "sim.bp-monitor", "sim.pulse-oximeter", "sim.thermometer")


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    data_dir: Path
    duration: float | None
    broker: str | None
    database: str | None
    patients: int
    interval: float
    host: str
    port: int
    keep: bool
    history: bool = True  # publish 14 days of history first (remon.demo_history)


def virtual_ble_available() -> bool:
    """bumble (the ``virtual`` extra) is installed: hubs get virtual BLE peripherals too."""
    return importlib.util.find_spec("bumble") is not None


def ble_devices(i: int, profile: str, opts: DemoOptions) -> list[DeviceSection]:
    """Patient ``i``'s virtual BLE devices, read through the production BLE path.

    A glucose meter with a month of stored records (the first hub's meter drops the link twice
    mid-download, as real meters do), a blood-pressure cuff measured every few intervals, and,
    for every third patient, a CGM sensor streaming with E2E-CRC.
    """
    subject = f"demo-patient-{i + 1:04d}"
    out = [
        DeviceSection(
            id="ble-gm",
            kind="ble.glucose-meter",
            address=f"F0:00:00:00:{i // 256:02X}:{i % 256:02X}",
            subject=subject,
            profile=profile,
            interval_s=opts.interval * 4,
            poll_interval_s=opts.interval * 2,
            virtual=VirtualDeviceSection(
                records=90,
                record_every_s=opts.interval * 4,
                cut_after=[30, 25] if i == 0 else [],
                seed=i,
            ),
        ),
        DeviceSection(
            id="ble-bp",
            kind="ble.bp-monitor",
            address=f"F1:00:00:00:{i // 256:02X}:{i % 256:02X}",
            subject=subject,
            profile=profile,
            poll_interval_s=opts.interval * 3,
            idle_timeout_s=2.0,
            virtual=VirtualDeviceSection(seed=i, clock_offset_s=1500.0 if i == 1 else 0.0),
        ),
    ]
    if i % 3 == 0:
        out.append(
            DeviceSection(
                id="ble-cgm",
                kind="ble.cgm",
                address=f"F2:00:00:00:{i // 256:02X}:{i % 256:02X}",
                subject=subject,
                profile=profile,
                # the first CGM's glucose is falling towards a low as the demo starts: the
                # edge's 20-min prediction raises "urgent low soon" before the low itself
                virtual=VirtualDeviceSection(
                    seed=i, backlog_min=180, cgm_fall_to_mmol_l=3.5 if i == 0 else None
                ),
            )
        )
    return out


#: The demo's care directory: a health centre whose clinicians get the clinical alerts, and a
#: home-care team that gets the dispenser clients' alerts.
DEMO_TEAM = "demo-health-centre"
DEMO_HOME_CARE = "demo-home-care"
CLINICIAN = "demo.clinician"
HOME_CARE = "demo.home-care"


def seed_directory(storage: Storage, opts: DemoOptions) -> dict[str, str]:
    """Teams, a clinician and a home-care nurse (their tokens returned), every demo patient in
    the health centre's team, the dispenser clients in the home-care team's."""
    care = CareDirectory(storage)
    admin = Principal(id="demo-setup", name="demo setup", role=Role.ADMIN, team_ids=frozenset())
    now = datetime.now(UTC)
    care.put_team(admin, DEMO_TEAM, "Demo health centre", now=now)
    care.put_team(admin, DEMO_HOME_CARE, "Demo home care", now=now)
    tokens: dict[str, str] = {}
    for sid, name, role, team in (
        (CLINICIAN, "Demo clinician", Role.CLINICIAN, DEMO_TEAM),
        (HOME_CARE, "Demo home-care nurse", Role.HOME_CARE, DEMO_HOME_CARE),
    ):
        issued = care.put_staff(
            admin, sid, name=name, role=role, team_ids=[team], issue_token=True, now=now
        )
        assert issued.token is not None
        tokens[sid] = issued.token
    for i in range(opts.patients):
        ref = f"demo-patient-{i + 1:04d}"
        care.put_patient(admin, ref, team_id=DEMO_TEAM, time_zone="Europe/Helsinki", now=now)
        if i % 3 == 1:  # the hubs with a dispenser (serial_devices)
            care.put_dispenser_client(
                admin,
                ref,
                home_care_team_id=DEMO_HOME_CARE,
                missed_dose_window_min=5,
                dose_times=["08:00", "14:00", "20:00"],
                now=now,
            )
    return tokens


#: What each demo dispenser client does with their doses, by hub (cycled).
DISPENSER_CLIENTS = ("misses", "late", "mixed")


def serial_devices(i: int, opts: DemoOptions) -> list[DeviceSection]:
    """Patient ``i``'s serial devices: simulators on real ptys, read by the production serial
    path (pyserial, the protocol codecs, the firmware bridge host).

    Every hub has a serial glucose meter (ASTM Contour or OneTouch Ultra 2, alternately);
    every third hub a PEF sensor board streaming raw flow at 1 kHz, and every third another a
    medication dispenser whose client takes doses late, misses them, or a mix.
    """
    subject = f"demo-patient-{i + 1:04d}"
    every = max(opts.interval * 3, 5.0)
    devices = [
        DeviceSection(
            id="contour" if i % 2 == 0 else "ultra2",
            kind="serial.glucose-astm" if i % 2 == 0 else "serial.glucose-onetouch",
            subject=subject,
            port="usb-meter",
            poll_interval_s=every,
            unit="mg/dL" if i % 4 == 2 else "mmol/L",
            virtual=VirtualDeviceSection(
                seed=i, records=20, record_every_s=every, noise_every=17 if i == 1 else None
            ),
        )
    ]
    if i % 3 == 0:
        devices.append(
            DeviceSection(
                id="pef-board",
                kind="serial.pef-board",
                subject=subject,
                port="usb-pef",
                virtual=VirtualDeviceSection(
                    seed=i, blow_every_s=max(opts.interval * 2, 6.0), artefact_every=4
                ),
            )
        )
    if i % 3 == 1:
        devices.append(
            DeviceSection(
                id="dispenser",
                kind="serial.dispenser",
                subject=subject,
                port="usb-dispenser",
                virtual=VirtualDeviceSection(
                    seed=i,
                    behaviour=DISPENSER_CLIENTS[(i // 3) % len(DISPENSER_CLIENTS)],
                    dose_every_s=max(opts.interval * 6, 20.0),
                    missed_window_s=300,
                    doses_left=12,
                ),
            )
        )
    return devices


def fleet(opts: DemoOptions, broker_url: str, protocol: MqttProtocol = "auto") -> list[AgentConfig]:
    configs = []
    with_ble = virtual_ble_available()
    for i in range(opts.patients):
        site = f"home-{i + 1:04d}"
        profile = FLEET_PROFILES[i % len(FLEET_PROFILES)]
        devices = [
            DeviceSection(
                id=kind.split(".")[1],
                kind=kind,
                subject=f"demo-patient-{i + 1:04d}",
                profile=profile,
                interval_s=opts.interval * (1 + 0.25 * j),
                seed=i,
                unit="mg/dL" if (kind == "sim.glucose-meter" and i % 3 == 2) else "mmol/L",
                clock_skew_s=1200.0 if (i == 4 and j == 0) else 0.0,
                error_rate=0.02,
            )
            for j, kind in enumerate(DEVICE_KINDS)
        ]
        if with_ble:
            devices += ble_devices(i, profile, opts)
        devices += serial_devices(i, opts)
        configs.append(
            AgentConfig(
                agent=AgentSection(
                    site=site, data_dir=opts.data_dir / "agents" / site, outbox_synchronous="NORMAL"
                ),
                mqtt=MqttSection(
                    url=broker_url,
                    client_id=f"remon-agent-{site}",
                    protocol=protocol,
                ),
                ble=BleSection(backend="virtual", scan_timeout_s=5.0, max_connections=2),
                serial=SerialSection(backend="virtual"),
                devices=devices,
            )
        )
    return configs


#: The demo's live self-measurement station (the history's visits were at the same one).
KIOSK_SITE = "kiosk-0001"
KIOSK_KINDS = ("sim.bp-monitor", "sim.pulse-oximeter", "sim.thermometer")


def kiosk_code(i: int) -> str:
    """Demo patient ``i``'s one-time code for the station (printed at start)."""
    return f"{1000 + i + 1}-{7000 + 37 * (i + 1)}"


def kiosk_config(
    opts: DemoOptions, broker_url: str, port: int, protocol: MqttProtocol = "auto"
) -> AgentConfig:
    """A kiosk-mode agent: three station devices measuring for whoever's visit is open at its
    screen, and a one-time code for each demo patient."""
    data_dir = opts.data_dir / "agents" / KIOSK_SITE
    data_dir.mkdir(parents=True, exist_ok=True)
    codes = data_dir / "codes.toml"
    lines = [f'"{kiosk_code(i)}" = "demo-patient-{i + 1:04d}"' for i in range(opts.patients)]
    codes.write_text("[codes]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return AgentConfig(
        agent=AgentSection(site=KIOSK_SITE, data_dir=data_dir, outbox_synchronous="NORMAL"),
        mqtt=MqttSection(url=broker_url, client_id=f"remon-agent-{KIOSK_SITE}", protocol=protocol),
        kiosk=KioskSection(ui_port=port, codes_file=codes),  # the screen: loopback only
        devices=[
            DeviceSection(
                id=kind.split(".")[1],
                kind=kind,
                subject=KIOSK_SITE,
                subject_kind="kiosk-session",
                interval_s=max(opts.interval * 2, 3.0),
                seed=100 + j,
                error_rate=0.0,
            )
            for j, kind in enumerate(KIOSK_KINDS)
        ],
    )


class _ApiServer:
    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=2,  # open SSE queue streams end on shutdown
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def run_demo(opts: DemoOptions) -> int:
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    if opts.data_dir.exists() and not opts.keep:
        shutil.rmtree(opts.data_dir)
    opts.data_dir.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        broker_url = opts.broker
        broker_kind = "given"
        protocol: MqttProtocol = "auto"
        if broker_url is None or broker_url == "embedded":
            if broker_url is None and mosquitto_binary() is not None:
                mq = MosquittoProcess(opts.data_dir / "broker")
                stack.enter_context(mq)
                broker_url, broker_kind = mq.url, "private Mosquitto"
            else:
                eb = EmbeddedBroker()
                stack.enter_context(eb)
                broker_url, broker_kind = eb.url, "embedded amqtt (MQTT 3.1.1)"
                protocol = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
        database = opts.database or f"sqlite:///{opts.data_dir / 'remon.db'}"
        token = secrets.token_urlsafe(18)
        settings = IngestSettings(
            database_url=database, broker_url=broker_url, api_tokens={token: "demo-admin"}
        )
        storage = open_storage(database)
        service = IngestService(storage)
        staff_tokens = seed_directory(storage, opts)
        consumer = Consumer(
            service,
            ConsumerConfig(url=broker_url, client_id="remon-demo-ingest", protocol=protocol),
        )
        consumer.start()
        stack.callback(consumer.stop)
        history_note = ""
        if opts.history:
            from remon.demo_history import load_history

            now = datetime.now(UTC)
            hist = load_history(
                storage=storage,
                consumer=consumer,
                broker_url=broker_url,
                protocol=protocol,
                data_dir=opts.data_dir,
                patients=opts.patients,
                now=now,
                # the live BLE CGMs bring their own last 3 hours (backlog_min=180 above)
                cgm_until=now - timedelta(minutes=180) if virtual_ble_available() else None,
            )
            history_note = (
                f"  history    {hist.observations} readings and {hist.events} dispenser events "
                f"of the last 14 days, published in {hist.seconds:.1f} s\n"
            )
        port = opts.port or free_port()
        api = _ApiServer(create_web_app(service, settings), opts.host, port)
        api.start()
        stack.callback(api.stop)

        base = f"http://{opts.host}:{port}"
        agents = [Agent(cfg) for cfg in fleet(opts, broker_url, protocol)]
        kiosk_port = free_port()
        agents.append(Agent(kiosk_config(opts, broker_url, kiosk_port, protocol)))
        n_devices = sum(len(a.config.devices) for a in agents)
        codes = ", ".join(
            f"{kiosk_code(i)} (patient {i + 1})" for i in range(min(opts.patients, 3))
        )
        ble_note = (
            "  BLE        every hub also reads virtual BLE peripherals (bumble) through bleak:\n"
            "             a glucose meter (RACP download), a BP cuff, and every third a CGM\n"
            if virtual_ble_available()
            else "  BLE        install the 'virtual' extra (bumble) for virtual BLE peripherals\n"
        ) + (
            "  serial     simulators on real ptys read through pyserial: a Contour (ASTM) or\n"
            "             OneTouch Ultra 2 meter on every hub, a PEF sensor board (raw flow at\n"
            "             1 kHz) on every third, a medication dispenser on every third other one;\n"
            f"             missed doses: {base}/api/v1/events?kind=dose_missed\n"
        )
        hc_token = staff_tokens[HOME_CARE]
        print(
            f"""
remon demo — {opts.patients} simulated patients, {n_devices} devices
  broker     {broker_url} ({broker_kind})
  database   {_redact(database)}
  data dir   {opts.data_dir}
  web UI     {base}/ui/   (sign in with one of the staff tokens below; fi/sv/en)
{history_note}  API        {base}/api/v1/alerts     (docs: {base}/docs)
  token      {token}   (admin: every alert)
  try        curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/alerts?state=open
  staff      clinician {staff_tokens[CLINICIAN]}   ({DEMO_TEAM}'s clinical alerts)
             home care {staff_tokens[HOME_CARE]}   ({DEMO_HOME_CARE}'s dispenser alerts)
  stream     curl -sN -H 'Authorization: Bearer {hc_token}' {base}/api/v1/alerts/stream
  kiosk      http://127.0.0.1:{kiosk_port}/   (the self-measurement station's screen;
             one-time codes {codes}, ...)
  faulty hub {FAULTY_SITE} sends a malformed reading every {FAULTY_EVERY_S:.0f} s: watch it go to
             {base}/api/v1/dead-letters while the rest flows
{ble_note}Simulated data only: every reading carries the 'simulated' quality flag. Ctrl-C stops.
""",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run_fleet(agents, service, opts, broker_url, protocol))
        # let the consumer take what the relays delivered before shutting down
        _wait_settled(service, agents, timeout=10)
        _final_summary(service, opts.data_dir, database, token)
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


async def _run_fleet(
    agents: list[Agent],
    service: IngestService,
    opts: DemoOptions,
    broker_url: str,
    protocol: MqttProtocol,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(a.run(stop), name=f"hub {a.config.agent.site}") for a in agents]
    tasks.append(
        asyncio.create_task(
            _faulty_hub(opts, broker_url, protocol, stop), name=f"hub {FAULTY_SITE}"
        )
    )
    for t in tasks:
        t.add_done_callback(_report_failure)
    started = time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            _print_summary(service, agents, time.monotonic() - started)
            if opts.duration is not None and time.monotonic() - started >= opts.duration:
                stop.set()
    finally:
        stop.set()
        # every agent bounds its own shutdown; this bound is for the demo as a whole
        _, stuck = await asyncio.wait(tasks, timeout=FLEET_STOP_S)
        for t in stuck:
            log.warning("a hub did not stop within %.0f s: %s", FLEET_STOP_S, t.get_name())
            t.cancel()


def _report_failure(task: asyncio.Task[None]) -> None:
    """An agent that stopped on its own is news: say why (the others go on)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())


FAULTY_SITE = "home-faulty"
FLEET_STOP_S = 30.0
FAULTY_EVERY_S = 10.0


async def _faulty_hub(
    opts: DemoOptions, broker_url: str, protocol: MqttProtocol, stop: asyncio.Event
) -> None:
    """A hub with a firmware bug: its meter's value goes out as text instead of a number.

    It uses the production outbox and relay; only the payload is wrong. The ingest must keep it
    as a dead letter with the reason and path, and the rest of the fleet must not notice.
    """
    data = opts.data_dir / "agents" / FAULTY_SITE
    data.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(data / "outbox.sqlite", synchronous="NORMAL")
    relay = Relay(
        outbox,
        RelayConfig(url=broker_url, client_id=f"remon-agent-{FAULTY_SITE}", protocol=protocol),
        site=FAULTY_SITE,
        agent_version="0.1.0-buggy",
    )
    relay.start()
    device = sim_identity("sim.glucose-meter", f"{FAULTY_SITE}-gm1")
    n = 0
    try:
        while not stop.is_set():
            n += 1
            now = datetime.now(UTC)
            good = encode_observations(
                site=FAULTY_SITE,
                device_id="gm1",
                device=device,
                subject=Subject(kind="patient", ref="demo-patient-faulty"),
                observations=[
                    Observation(
                        measure="glucose.capillary",
                        unit="mmol/L",
                        value=5.8,
                        effective_time=now,
                        record_key=f"seq:{n}@{int(now.timestamp())}",
                        quality=frozenset({QualityFlag.SIMULATED}),
                        provenance=Provenance(source="sim:buggy-firmware"),
                    )
                ],
                created_at=now,
            )[0]
            doc = json.loads(good.payload)
            doc["observations"][0]["value"] = "5,8"  # the bug: a localised string
            bad = OutboundMessage(
                topic=good.topic, payload=json.dumps(doc).encode(), msg_id=good.msg_id
            )
            await asyncio.to_thread(outbox.put_many, [bad])
            relay.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FAULTY_EVERY_S)
    finally:
        await asyncio.to_thread(relay.stop)
        outbox.close()


def _print_summary(service: IngestService, agents: list[Agent], elapsed: float) -> None:
    s = service.stats()
    queued = sum(a.stats.observations_queued for a in agents)
    acked = sum((a.relay_stats.acked if a.relay_stats else 0) for a in agents)
    line = (
        f"[{elapsed:5.0f}s] readings queued {queued:6d} · messages relayed {acked:6d} · "
        f"stored {s.observations:6d} · open alerts {s.open_alerts:3d} · "
        f"dead letters {s.dead_letters}"
    )
    ble = [src.stats for a in agents for src in a.ble_sources]
    if ble:
        line += f" · BLE sessions {sum(b.sessions for b in ble)}"
        line += f" · telemetry {sum(a.stats.telemetry_queued for a in agents)}"
    blows = sum(a.signal.stats.blows for a in agents)
    events = sum(a.stats.events_queued for a in agents)
    line += (
        f" · PEF blows {blows} · dispenser events {events}"
        f" · rejects {sum(a.stats.rejects for a in agents)}"
    )
    print(line, flush=True)


def _wait_settled(service: IngestService, agents: list[Agent], timeout: float) -> None:
    """Give the ingest the messages the broker already confirmed to the agents."""
    deadline = time.monotonic() + timeout
    relayed = sum(a.relay_stats.acked for a in agents if a.relay_stats is not None)
    while time.monotonic() < deadline and service.stats().messages < relayed:
        time.sleep(0.2)


def _final_summary(service: IngestService, data_dir: Path, database: str, token: str) -> None:
    s = service.stats()
    alerts = service.list_alerts(state="open", limit=8)
    print(
        f"\nstored {s.observations} observations in {s.messages} messages; "
        f"{s.open_alerts} open alerts; {s.dead_letters} dead letters",
        flush=True,
    )
    for a in alerts:
        print(f"  [{a.priority:6}] {a.subject_ref}: {a.explanation}", flush=True)
    missed = service.list_events(kind="dose_missed", limit=1000)
    late = service.list_events(kind="dose_taken_late", limit=1000)
    if missed or late:
        print(f"  dispensers: {len(missed)} missed doses, {len(late)} taken late", flush=True)
    for e in missed[:3]:
        sched = e.scheduled_time.isoformat(timespec="minutes") if e.scheduled_time else "?"
        print(f"  [missed] {e.subject_ref}: dose {e.dose_id} scheduled {sched}", flush=True)
    reporting = [d for d in service.storage.device_subjects(limit=1000) if d.link is not None]
    if reporting:  # BLE devices: serial and simulated ones send no telemetry
        print(f"  device telemetry from {len(reporting)} BLE devices, e.g.:", flush=True)
    for dev in sorted(reporting, key=lambda d: (d.site, d.device_id))[:6]:
        battery = f"battery {dev.battery_pct} %" if dev.battery_pct is not None else "no battery"
        rssi = f"RSSI {dev.rssi_dbm} dBm" if dev.rssi_dbm is not None else "RSSI unknown"
        print(
            f"  [device] {dev.site}/{dev.device_id} ({dev.subject_ref}): {battery}, {rssi}, "
            f"link {dev.link}",
            flush=True,
        )
    for d in service.list_dead_letters(limit=1):
        print(f"  dead letter from {d.topic}: {d.code} at {d.path}: {d.detail}", flush=True)
    if database.startswith("sqlite"):
        # only the demo's own SQLite file: an operated database's URL may hold a password
        print(
            f"\nThe data stays in {data_dir}; serve it again (API only) with:\n"
            f'  REMON_API_TOKENS=\'{{"{token}": "demo-admin"}}\' '
            f"remon ingest run --database {database} --no-consume",
            flush=True,
        )
    sys.stdout.flush()
