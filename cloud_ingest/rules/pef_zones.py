"""PEF zone rules: peak flow against the patient's personal best -> alert actions. Pure.

Facts (DOMAIN.md §1): zones against personal best (asthma action plan): green 80-100 %,
yellow 50-80 %, red < 50 %; the personal best is entered by the clinician (a per-patient value
in L/min); a session's value is its best blow. Priorities: DOMAIN.md §5 (IEC 60601-1-8).

Theory of operation:

- **Zone boundaries** (the one place they are decided: :func:`at_least_percent` and
  :func:`below_percent`). "50-80 %" is read as the half-open range from 50 % up to but not
  including 80 %: a value at exactly a boundary belongs to the upper zone, so exactly 80 % is
  green, exactly 50 % is yellow, and red is strictly below 50 % as DOMAIN.md writes it. Above
  100 % is green (a personal best can be beaten). Comparisons are exact: values are taken as
  the decimals of their shortest form (``Fraction(repr(x))``), like the PEF diary analysis, so
  400 L/min of 500 is exactly 80 % and 399.95 L/min is 79.99 %, with no float tolerance.
- **Decisive readings** (as ``engine.meets``): a meter's HI reading (``>`` the sensor limit)
  stands for every value above it and a LO reading (``<``) for every value below. A reading
  counts toward a zone only when every value it stands for is in it: ``> 900`` of a 500 L/min
  personal best is green; ``>`` a limit below 80 % decides nothing (it may be green).
- **Session value** (DOMAIN.md §1: the session value is the best blow). A session is a run of
  one subject's blows each at most :data:`PEF_SESSION_GAP_MIN` after the one before (as the
  edge groups them). Blows flagged as of poor quality (``cough``, ``early-stop``,
  ``slow-rise``, ``hesitation``, ``large-bev``; the edge's blow analysis) and blows the device
  marked ``questionable`` may understate (or, for a cough, overstate) the true peak: they stay
  stored and shown, but they never raise, update or clear a zone alert and are not a session's
  value. A session with no good blow is not judged. ``derived`` readings are ignored.
- Each good blow is judged *as it is made*: the session value so far is the best of the good
  blows of its session up to and including it. A blow that an earlier good blow of the session
  decisively matches or beats changes nothing (a tired third blow after two good ones raises
  no alert). Otherwise: any good blow so far in green -> green; every one below 50 % -> red;
  every one below 80 % -> yellow; else undecided (nothing happens). So a weak first blow of a
  session can raise an alert that a better blow a minute later marks cleared: judging the
  session only after it ended would need a clock tick and the readings again, and the
  decision would depend on how readings were split over calls. With ``earlier`` (the readings
  of the session stored before this call) the result is the same however the readings are
  split over calls in time order.
- **One family** like ``thresholds.py``: ``pef-zone-red`` and ``pef-zone-yellow`` are separate
  alerts and a blow triggers only the most severe one it meets, so a red session is raised as
  red at once and never hides inside an older yellow alert (which is left as it is). A blow in
  the green zone newer than an alert's latest evidence marks both cleared; a yellow blow does
  not clear the red alert (the plan's all-clear is the green zone). A person resolves them.
- One open alert per subject + condition; the same observation id twice counts once; a late
  blow older than the latest evidence adds to the count but neither clears nor replaces it.
- Subjects without a personal best get no zone alert: nothing is invented in its place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Final, Literal

from cloud_ingest.rules.dispenser import (
    FindingAction,
    FindingBook,
    FindingEvidence,
    OpenFinding,
    RuleInputError,
    check_rule_facts,
    require_text,
    require_utc,
    unique_by_id,
    utc_text,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.clinical import (
    PEF_METER_MAX_L_MIN,
    PEF_METER_MIN_L_MIN,
    PEF_ZONE_GREEN_PERCENT,
    PEF_ZONE_RED_PERCENT,
    Figure,
)
from device_profiles.codes import MEASURES
from device_profiles.observation import COMPARATORS, QualityFlag

#: The name of the per-patient parameter that holds the personal best (L/min), as the clinician
#: entered it (DOMAIN.md §1).
PERSONAL_BEST_PARAMETER: Final = "pef-personal-best"
PEF_ZONE_RED: Final = "pef-zone-red"
PEF_ZONE_YELLOW: Final = "pef-zone-yellow"
#: The canonical PEF unit (device_profiles.codes, DOMAIN.md §6): L/min.
PEF_UNIT: Final = MEASURES["pef"].unit

Zone = Literal["green", "yellow", "red"]

#: Blow quality flags of the edge's blow analysis (edge_agent.pef_blow, DOMAIN.md §1): the blow
#: may not show the patient's true peak flow, so it is not the session's value.
POOR_BLOW_FLAGS: Final[frozenset[QualityFlag]] = frozenset(
    {
        QualityFlag.COUGH,
        QualityFlag.EARLY_STOP,
        QualityFlag.SLOW_RISE,
        QualityFlag.HESITATION,
        QualityFlag.LARGE_BEV,
    }
)
_KNOWN_FLAGS: Final[frozenset[str]] = frozenset(f.value for f in QualityFlag)

#: Blows further apart than this start a new session. remon default, the same gap the edge
#: uses to follow a board's session (edge_agent.signal.SESSION_GAP, which cloud_ingest may not
#: import): a session's blows follow each other within a minute or two, and the post-BD blows
#: 15-30 min after the reliever (DOMAIN.md §1) are a session of their own.
PEF_SESSION_GAP_MIN: Final = Figure(
    10.0, "min", "remon default: the edge's PEF session gap (edge_agent.signal), configurable"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PefZonePolicy:
    """The zone boundaries (percent of personal best) and the session gap in effect.

    ``green_from``: at or above it, green. ``yellow_from``: at or above it (and below
    ``green_from``), yellow; below it, red.
    """

    green_from: Figure = PEF_ZONE_GREEN_PERCENT
    yellow_from: Figure = PEF_ZONE_RED_PERCENT
    session_gap: Figure = PEF_SESSION_GAP_MIN

    def __post_init__(self) -> None:
        for name, fig in (("green_from", self.green_from), ("yellow_from", self.yellow_from)):
            if fig.unit != "%":
                raise RuleError(f"{name} must be in %, got {fig.unit!r}")
        if not 0 < self.yellow_from.value < self.green_from.value:
            raise RuleError(
                f"zone boundaries must satisfy 0 < yellow_from < green_from, got "
                f"{self.yellow_from.value:g} % and {self.green_from.value:g} %"
            )
        if self.session_gap.unit != "min":
            raise RuleError(f"session_gap must be in min, got {self.session_gap.unit!r}")
        if self.session_gap.value < 0:
            raise RuleError(f"session_gap must be >= 0, got {self.session_gap.value:g} min")

    @property
    def gap(self) -> timedelta:
        return timedelta(minutes=self.session_gap.value)


def exact(x: float) -> Fraction:
    """A float as the decimal of its shortest form, exactly (399.95 is 39995/100)."""
    return Fraction(repr(float(x)))


# --------------------------------------------------------------------------------------------
# readings and what they stand for


@dataclass(frozen=True, slots=True, kw_only=True)
class PefReading:
    """What the zone rules need of one stored PEF reading (one blow).

    ``comparator`` is set when the meter reported its limit instead of a value: ``>`` for a
    saturated blow (the value is the sensor limit), ``<`` below the range.
    """

    obs_id: str
    subject_ref: str
    effective_time: datetime
    value: float
    comparator: str | None = None
    quality: frozenset[str] = frozenset()
    simulated: bool = False
    unit: str = PEF_UNIT

    def __post_init__(self) -> None:
        require_text("PEF reading obs_id", self.obs_id)
        where = f"PEF reading {self.obs_id}"
        require_text(f"{where}: subject_ref", self.subject_ref)
        require_utc(f"{where}: effective_time", self.effective_time)
        if self.unit != PEF_UNIT:
            raise RuleInputError(f"{where}: unit must be {PEF_UNIT!r}, got {self.unit!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise RuleInputError(f"{where}: value must be a number, got {self.value!r}")
        if not math.isfinite(self.value) or self.value < 0:
            raise RuleInputError(f"{where}: value must be finite and >= 0, got {self.value!r}")
        if self.comparator is not None and self.comparator not in COMPARATORS:
            raise RuleInputError(f"{where}: unknown comparator {self.comparator!r}")
        if not isinstance(self.quality, frozenset):
            raise RuleInputError(f"{where}: quality must be a frozenset of flag values")
        unknown = sorted(str(f) for f in self.quality if f not in _KNOWN_FLAGS)
        if unknown:
            raise RuleInputError(f"{where}: unknown quality flags {unknown}")
        if not isinstance(self.simulated, bool):
            raise RuleInputError(f"{where}: simulated must be a bool")
        object.__setattr__(self, "quality", frozenset(str(f) for f in self.quality))

    @property
    def is_simulated(self) -> bool:
        return self.simulated or QualityFlag.SIMULATED.value in self.quality

    @property
    def poor_quality(self) -> list[str]:
        """Why the blow cannot be the session's value (empty: a good blow)."""
        out: list[str] = sorted(f.value for f in POOR_BLOW_FLAGS if f.value in self.quality)
        if QualityFlag.QUESTIONABLE.value in self.quality:
            out.append(QualityFlag.QUESTIONABLE.value)
        return out


@dataclass(frozen=True, slots=True)
class Span:
    """The values a reading stands for; None is unbounded (minus or plus infinity)."""

    lo: Fraction | None
    lo_incl: bool
    hi: Fraction | None
    hi_incl: bool


def span_of(value: float, comparator: str | None) -> Span:
    v = exact(value)
    if comparator is None:
        return Span(v, True, v, True)
    if comparator in ("<", "<="):
        return Span(None, False, v, comparator == "<=")
    if comparator in (">", ">="):
        return Span(v, comparator == ">=", None, False)
    raise RuleInputError(f"unknown comparator {comparator!r}")


def at_least_percent(s: Span, personal_best: Fraction, percent: Fraction) -> bool:
    """Every value of ``s`` is at least ``percent`` % of the personal best (the boundary itself
    belongs to the zone above it: exactly 80 % is green, exactly 50 % is yellow)."""
    return s.lo is not None and s.lo * 100 >= percent * personal_best


def below_percent(s: Span, personal_best: Fraction, percent: Fraction) -> bool:
    """Every value of ``s`` is below ``percent`` % of the personal best (the exact complement
    of :func:`at_least_percent` for a plain value)."""
    if s.hi is None:
        return False
    bound = percent * personal_best
    return s.hi * 100 < bound or (s.hi * 100 == bound and not s.hi_incl)


def _dominates(a: Span, b: Span) -> bool:
    """Every value of ``a`` is at least every value of ``b``."""
    return a.lo is not None and b.hi is not None and a.lo >= b.hi


def blow_zone(
    value: float,
    personal_best: float,
    *,
    comparator: str | None = None,
    policy: PefZonePolicy | None = None,
) -> Zone | None:
    """The zone of one reading, or None when a HI/LO reading's bound leaves it undecided.

    (A LO reading below 80 % that may be below 50 % has no zone here; as a session's value it
    raises the yellow alert, see :func:`session_zone`.)
    """
    pol = policy or PefZonePolicy()
    s = span_of(value, comparator)
    pb = check_personal_best(personal_best)
    green, yellow = exact(pol.green_from.value), exact(pol.yellow_from.value)
    if at_least_percent(s, pb, green):
        return "green"
    if below_percent(s, pb, yellow):
        return "red"
    if at_least_percent(s, pb, yellow) and below_percent(s, pb, green):
        return "yellow"
    return None


def session_zone(spans: list[Span], personal_best: Fraction, policy: PefZonePolicy) -> Zone | None:
    """The zone of a session's best good blow so far, decided from all of its good blows.

    Green when any blow is decisively green; red when every blow is decisively red; yellow
    when every blow is decisively below green (a LO reading below 80 % that may also be below
    50 % counts here: at least the yellow alert is certain); otherwise undecided (None).
    """
    green = exact(policy.green_from.value)
    yellow = exact(policy.yellow_from.value)
    if any(at_least_percent(s, personal_best, green) for s in spans):
        return "green"
    if spans and all(below_percent(s, personal_best, yellow) for s in spans):
        return "red"
    if spans and all(below_percent(s, personal_best, green) for s in spans):
        return "yellow"
    return None


def check_personal_best(value: float, *, subject_ref: str | None = None) -> Fraction:
    """A personal best usable as the zones' reference, exactly; refuses anything else.

    It comes from a PEF meter (DOMAIN.md §1: entered by the clinician, or the highest value
    over 2-3 weeks), so it lies in the meter range 50-900 L/min (DOMAIN.md §1).
    """
    where = "personal best" if subject_ref is None else f"personal best of {subject_ref}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleInputError(f"{where} must be a number in L/min, got {value!r}")
    lo, hi = PEF_METER_MIN_L_MIN.value, PEF_METER_MAX_L_MIN.value
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RuleInputError(
            f"{where} is {value!r} L/min: outside the PEF meter range {lo:g}-{hi:g} L/min "
            f"({PEF_METER_MIN_L_MIN.source})"
        )
    return exact(value)


# --------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True, slots=True, kw_only=True)
class PefZoneRule:
    """One zone condition as data (built from the policy, so its words carry its figures)."""

    condition: str
    title: str
    priority: Priority
    criterion: str
    source: str
    all_clear: str
    audience: Literal["clinician"] = "clinician"

    def __post_init__(self) -> None:
        check_rule_facts(self)


def pef_zone_rules(policy: PefZonePolicy) -> dict[str, PefZoneRule]:
    g, y = policy.green_from, policy.yellow_from
    poor = ", ".join(sorted(f.value for f in POOR_BLOW_FLAGS))
    in_effect = g.source if g.source == y.source else f"{g.source}; {y.source}"
    facts = (
        f"DOMAIN.md §1 zones against personal best (asthma action plan): green {g.value:g} % "
        f"and above, yellow {y.value:g} % up to {g.value:g} %, red below {y.value:g} %; in "
        f"effect: {in_effect}; personal best entered by the clinician; the session "
        f"value is the best blow (DOMAIN.md §1), blows flagged {poor} or questionable are left "
        f"out; session gap: {policy.session_gap.value:g} min, {policy.session_gap.source}"
    )
    session = "the value of a PEF session so far (its best good-quality blow)"
    clear = (
        f"a later good-quality blow in the green zone (at least {g.value:g} % of the personal "
        "best); a person still resolves it"
    )
    return {
        PEF_ZONE_RED: PefZoneRule(
            condition=PEF_ZONE_RED,
            title=f"PEF in the red zone: below {y.value:g} % of personal best",
            priority=Priority.HIGH,
            criterion=f"{session} is below {y.value:g} % of the patient's personal best "
            f"(exactly {y.value:g} % is yellow)",
            source=facts + "; priority: remon default, high: the red zone is the most severe "
            "zone of the patient's asthma action plan, and a severe attack left unanswered "
            "risks death or irreversible injury, so immediate response (IEC 60601-1-8 high, "
            "DOMAIN.md §5)",
            all_clear=clear + " (a yellow blow does not clear it)",
        ),
        PEF_ZONE_YELLOW: PefZoneRule(
            condition=PEF_ZONE_YELLOW,
            title=f"PEF in the yellow zone: below {g.value:g} % of personal best",
            priority=Priority.MEDIUM,
            criterion=f"{session} is below {g.value:g} % of the patient's personal best and "
            f"not below {y.value:g} %, or is a LO reading below {g.value:g} % (exactly "
            f"{g.value:g} % is green)",
            source=facts + "; priority: remon default, medium: the yellow zone is the plan's "
            "warning zone; the worsening it shows is reversible when treated in time but can "
            "lead into the red zone, so prompt response rather than awareness (IEC 60601-1-8 "
            "medium: reversible injury, DOMAIN.md §5); not high, as the red zone has its own "
            "alert",
            all_clear=clear,
        ),
    }


# --------------------------------------------------------------------------------------------
# wording


def _tenths(p: Fraction, *, up: bool) -> str:
    """A percentage to 0.1, rounded away from the zone it is not in: a value below 80 % never
    reads 80.0 % (79.99 reads 79.9), and a LO bound is rounded up (it stays a true bound)."""
    n = math.ceil(p * 10) if up else math.floor(p * 10)
    return f"{n / 10:.1f}"


def describe_blow(r: PefReading, personal_best: Fraction) -> str:
    """A blow in words: value (or HI/LO bound), UTC time, share of the personal best."""
    pct = exact(r.value) * 100 / personal_best
    pb = f"personal best {float(personal_best):g} {PEF_UNIT}"
    if r.comparator in ("<", "<="):
        what = (
            f"PEF LO reading {r.comparator} {r.value:g} {PEF_UNIT} (below the meter's range), "
            f"{r.comparator} {_tenths(pct, up=True)} % of {pb}"
        )
    elif r.comparator in (">", ">="):
        what = (
            f"PEF HI reading {r.comparator} {r.value:g} {PEF_UNIT} (the sensor's limit), "
            f"{r.comparator} {_tenths(pct, up=False)} % of {pb}"
        )
    else:
        what = f"PEF {r.value:g} {PEF_UNIT}, {_tenths(pct, up=False)} % of {pb}"
    simulated = " (simulated)" if r.is_simulated else ""
    return f"{what}, at {utc_text(r.effective_time)}{simulated} (observation {r.obs_id})"


@dataclass(slots=True)
class _Session:
    start: datetime
    last: datetime
    blows: int = 0
    left_out: int = 0


def _evidence(r: PefReading, pb: Fraction, s: _Session) -> FindingEvidence:
    context = (
        f"the best good-quality blow so far of the session begun at {utc_text(s.start)} "
        f"({s.blows} blow{'s' if s.blows != 1 else ''}"
    )
    if s.left_out:
        context += f", {s.left_out} left out for blow quality"
    return FindingEvidence(
        event_id=r.obs_id,
        kind="pef-blow",
        time=r.effective_time,
        summary=f"{describe_blow(r, pb)}: {context})",
    )


# --------------------------------------------------------------------------------------------
# evaluation


def _unique(readings: Iterable[PefReading], name: str) -> dict[str, PefReading]:
    return unique_by_id(readings, PefReading, lambda r: r.obs_id, holder=name, label="PEF reading")


def evaluate_pef_zones(
    readings: Iterable[PefReading],
    *,
    personal_best: Mapping[str, float],
    open_alerts: Iterable[OpenFinding],
    now: datetime,
    policy: PefZonePolicy | None = None,
    earlier: Iterable[PefReading] = (),
) -> list[FindingAction]:
    """Zone actions for newly stored PEF ``readings`` given the active alerts.

    ``personal_best`` maps subject to L/min; subjects without one get no zone alerts.
    ``earlier`` are already-stored readings that the new ones may continue a session of (for
    each subject, back to the first gap longer than the session gap; more is harmless): they
    are never judged again, they only make a session's best blow so far known. Without them a
    call judges its readings as if each session started with them (the safe direction: a weaker
    blow after a better one in an earlier call may then raise an alert). ``now`` stamps the
    audit events; it is passed in, never read from a clock.
    """
    pol = policy or PefZonePolicy()
    rules = pef_zone_rules(pol)
    bests = {s: check_personal_best(v, subject_ref=s) for s, v in personal_best.items()}
    new = _unique(readings, "readings")
    context = _unique(earlier, "earlier")
    for obs_id in new.keys() & context.keys():
        if new[obs_id] != context[obs_id]:
            raise RuleInputError(f"PEF reading {obs_id!r} given twice with different content")
    book = FindingBook(open_alerts, rules=rules, now=now)
    by_subject: dict[str, list[PefReading]] = {}
    for r in (context | new).values():
        if QualityFlag.DERIVED.value in r.quality:
            continue  # computed, not measured
        by_subject.setdefault(r.subject_ref, []).append(r)
    gap = pol.gap
    for subject in sorted(by_subject):
        pb = bests.get(subject)
        if pb is None:
            continue  # no personal best: no zones, nothing invented
        session: _Session | None = None
        good: list[Span] = []
        for r in sorted(by_subject[subject], key=lambda r: (r.effective_time, r.obs_id)):
            if session is None or r.effective_time - session.last > gap:
                session, good = _Session(start=r.effective_time, last=r.effective_time), []
            session.last = r.effective_time
            session.blows += 1
            if r.poor_quality:
                session.left_out += 1
                continue
            span = span_of(r.value, r.comparator)
            matched = any(_dominates(e, span) for e in good)
            good.append(span)
            if matched or r.obs_id not in new:
                continue
            _judge(book, r, pb, session, session_zone(good, pb, pol))
    return book.actions()


def _judge(
    book: FindingBook, r: PefReading, pb: Fraction, session: _Session, zone: Zone | None
) -> None:
    if zone == "green":
        for condition in (PEF_ZONE_RED, PEF_ZONE_YELLOW):
            book.clear(
                r.subject_ref,
                condition,
                at=r.effective_time,
                by=r.obs_id,
                note=f"all-clear: a good-quality blow in the green zone: {describe_blow(r, pb)}",
            )
    elif zone is not None:
        condition = PEF_ZONE_RED if zone == "red" else PEF_ZONE_YELLOW
        book.trigger(
            r.subject_ref,
            condition,
            _evidence(r, pb, session),
            simulated=r.is_simulated,
            note=f"session value so far in the {zone} zone: {describe_blow(r, pb)}",
        )
