"""The agent's signal stage (edge_agent/signal.py): PEF from a PEF sensor board's raw flow curve.

Curves come from :func:`firmware_bridges.pef_curves.pef_flow_curve`, whose ``true_pef_l_min``
is 60 x the maximum of the noise-free samples: what an ideal PEF algorithm reports. The accuracy
target is the issue's: within ±5 % or ±10 L/min of the true PEF, whichever is larger, over the
range a PEF meter reads (60-900 L/min; DOMAIN.md §1: meter range 50-900 L/min), times to peak of
40-150 ms (DOMAIN.md §1: < 120 ms is the usual criterion, slower blows must still be measured),
board sample rates of 500-2000 Hz (firmware-bridges.md) and sensor noise up to 0.1 L/s.

Rules checked (signal.py): a curve needs >= 500 Hz, >= 150 ms of samples, finite samples within
the sensor range -20..20 L/s, else :class:`BlowRejected` names the blow and the sample; a blow
the board did not end normally is QUESTIONABLE; a simulator's blow is SIMULATED.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.observation import Observation, QualityFlag
from edge_agent.pef_blow import SMOOTHING_MS, analyse_blow
from edge_agent.serial_sources import blow_result
from edge_agent.signal import (
    FLOW_RANGE_L_S,
    MIN_BLOW_MS,
    SESSION_GAP,
    Blow,
    BlowRejected,
    SignalStage,
)
from firmware_bridges import messages as m
from firmware_bridges.pef_curves import IDLE_S, Artefact, PefCurve, pef_flow_curve

T0 = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)
PEFS = (60, 120, 250, 450, 700, 900)  # L/min
TIMES_TO_PEAK_MS = (40, 100, 150)
RATES = (500, 1000, 2000)  # Hz
NOISES = (0.0, 0.03, 0.1)  # L/s, standard deviation


def tolerance(true_pef: float) -> float:
    """The issue's accuracy figure: ±5 % or ±10 L/min, whichever is larger."""
    return max(0.05 * true_pef, 10.0)


def make_blow(
    flow: tuple[float, ...], rate: int, *, blow_id: int = 1, complete: bool = True
) -> Blow:
    return Blow(
        device_id="pef1",
        blow_id=blow_id,
        record_key=f"blow:{blow_id}@1795000000000",
        sample_rate_hz=rate,
        flow_l_s=flow,
        started_at=T0,
        complete=complete,
    )


def observe(
    curve: PefCurve, *, stage: SignalStage | None = None, complete: bool = True
) -> Observation:
    stage = stage or SignalStage()
    out = stage.on_blow(
        make_blow(curve.flow_l_s, curve.sample_rate_hz, complete=complete),
        source="serial:bridge-pef",
        simulated=False,
    )
    assert len(out) == 1
    return out[0]


def reported(curve: PefCurve) -> float:
    value = observe(curve).value
    assert value is not None
    return value


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize(
    ("pef", "ttp", "rate", "noise"),
    list(itertools.product(PEFS, TIMES_TO_PEAK_MS, RATES, NOISES)),
)
def test_pef_within_five_percent_or_ten_l_min(pef: int, ttp: int, rate: int, noise: float) -> None:
    curve = pef_flow_curve(
        pef_l_min=pef, sample_rate_hz=rate, time_to_peak_ms=ttp, noise_l_s=noise, seed=pef + ttp
    )
    assert curve.true_pef_l_min == pytest.approx(pef, rel=1e-9)  # no artefact: the peak is PEF
    got = reported(curve)
    assert abs(got - curve.true_pef_l_min) <= tolerance(curve.true_pef_l_min), (got, curve)


@settings(max_examples=40, deadline=None)
@given(
    pef=st.floats(60, 900),
    ttp=st.floats(40, 150),
    rate=st.integers(500, 2000),
    noise=st.floats(0, 0.1),
    seed=st.integers(0, 2**32 - 1),
)
def test_pef_accuracy_property(pef: float, ttp: float, rate: int, noise: float, seed: int) -> None:
    curve = pef_flow_curve(
        pef_l_min=pef, sample_rate_hz=rate, time_to_peak_ms=ttp, noise_l_s=noise, seed=seed
    )
    got = reported(curve)
    assert abs(got - curve.true_pef_l_min) <= tolerance(curve.true_pef_l_min)


@settings(max_examples=40, deadline=None)
@given(
    pef=st.floats(60, 900),
    ttp=st.floats(40, 150),
    rate=st.integers(500, 2000),
    artefact=st.sampled_from(["none", "cough", "early_stop", "hesitation"]),
)
def test_noise_free_pef_hardly_overshoots_the_highest_sample(
    pef: float, ttp: float, rate: int, artefact: Artefact
) -> None:
    """A degree-2 Savitzky-Golay fit follows a rounded peak: on noise-free curves it reads at
    most 0.5 % above the highest sample (a moving average would read below it)."""
    curve = pef_flow_curve(
        pef_l_min=pef, sample_rate_hz=rate, time_to_peak_ms=ttp, artefact=artefact
    )
    got = analyse_blow(curve.flow_l_s, rate).pef_l_min
    assert got <= curve.true_pef_l_min * 1.005


def test_constant_flow_is_its_own_pef() -> None:
    assert analyse_blow((5.0,) * 200, 1000).pef_l_min == pytest.approx(300.0)


def test_a_one_sample_spike_is_weighted_by_the_filters_centre_coefficient() -> None:
    from scipy.signal import savgol_coeffs

    flow = [1.0] * 300
    flow[150] = 11.0  # a 10 L/s glitch on one sample at 1 kHz
    window = round(SMOOTHING_MS)  # samples at 1 kHz (odd)
    centre = float(savgol_coeffs(window, 2)[window // 2])
    assert centre < 0.15  # the glitch is damped to a seventh or less
    got = analyse_blow(tuple(flow), 1000).pef_l_min
    assert got == pytest.approx((1.0 + 10.0 * centre) * 60)


# --------------------------------------------------------------------------- artefacts


@pytest.mark.parametrize(("pef", "rate"), list(itertools.product((60, 150, 300, 450, 900), RATES)))
def test_cough_gives_the_curves_highest_peak(pef: int, rate: int) -> None:
    """The stage reports the curve's maximum, a cough's second peak included (pef_curves: with
    a low PEF and a 4 L FVC the flow is still high 250 ms after the peak, so the cough is the
    maximum). Telling a cough from the blow's PEF is the blow-quality checks' job."""
    curve = pef_flow_curve(pef_l_min=pef, sample_rate_hz=rate, artefact="cough", noise_l_s=0.03)
    got = reported(curve)
    assert abs(got - curve.true_pef_l_min) <= tolerance(curve.true_pef_l_min)
    if curve.true_pef_l_min > pef + tolerance(pef):  # the cough dominates: PEF is overstated
        assert got > pef + tolerance(pef)
    else:
        assert abs(got - pef) <= tolerance(pef)


@pytest.mark.parametrize(
    ("pef", "ttp", "rate"), list(itertools.product((60, 300, 900), TIMES_TO_PEAK_MS, RATES))
)
def test_early_stop_keeps_the_pef_of_the_full_blow(pef: int, ttp: int, rate: int) -> None:
    """Stopping at half the FVC (4 L) comes long after the peak: the PEF is the full blow's."""
    curve = pef_flow_curve(
        pef_l_min=pef, sample_rate_hz=rate, time_to_peak_ms=ttp, artefact="early_stop"
    )
    full = pef_flow_curve(pef_l_min=pef, sample_rate_hz=rate, time_to_peak_ms=ttp)
    assert len(curve.flow_l_s) < len(full.flow_l_s)
    assert curve.true_pef_l_min == full.true_pef_l_min
    assert abs(reported(curve) - pef) <= tolerance(pef)


def stop_ms_after_peak(curve: PefCurve) -> float:
    last = len(curve.flow_l_s) - round(IDLE_S * curve.sample_rate_hz) - 1
    return (last - curve.peak_index) * 1000 / curve.sample_rate_hz


def early_stop(pef: int, rate: int, ttp: int, fvc_factor: float) -> PefCurve:
    """A blow stopped at half of a small FVC: ``fvc_factor`` x the flow-time area PEF x ttp."""
    fvc = fvc_factor * pef / 60 * ttp / 1000
    return pef_flow_curve(
        pef_l_min=pef, sample_rate_hz=rate, time_to_peak_ms=ttp, fvc_l=fvc, artefact="early_stop"
    )


@pytest.mark.parametrize(
    ("pef", "rate", "ttp", "fvc_factor"),
    [
        (pef, rate, *shape)
        for pef, rate, shape in itertools.product(
            (300, 900), RATES, [(40, 4.0), (40, 6.0), (100, 1.3), (100, 2.0), (150, 1.3)]
        )
    ],
)
def test_early_stop_soon_after_the_peak_keeps_the_pef(
    pef: int, rate: int, ttp: int, fvc_factor: float
) -> None:
    """The PEF holds when the stop is at least half a smoothing window after the peak (a
    centred window straddling the cut averages zeros in) and the blow is long enough."""
    curve = early_stop(pef, rate, ttp, fvc_factor)
    assert stop_ms_after_peak(curve) >= SMOOTHING_MS / 2
    assert len(curve.flow_l_s) * 1000 / rate >= MIN_BLOW_MS
    assert abs(reported(curve) - pef) <= tolerance(pef)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fvc_factor", [1.3, 2.0])
def test_early_stop_right_after_a_sharp_peak_is_too_short_to_use(
    rate: int, fvc_factor: float
) -> None:
    """With a 40 ms rise, a stop 6-22 ms after the peak leaves a blow shorter than 150 ms."""
    curve = early_stop(600, rate, 40, fvc_factor)
    msg = rejected(SignalStage(), make_blow(curve.flow_l_s, rate))
    assert f"at least {MIN_BLOW_MS * rate // 1000} needed" in msg


@pytest.mark.parametrize(
    ("pef", "ttp", "rate"), list(itertools.product((60, 300, 900), TIMES_TO_PEAK_MS, RATES))
)
def test_hesitation_before_the_rise_keeps_the_pef(pef: int, ttp: int, rate: int) -> None:
    curve = pef_flow_curve(
        pef_l_min=pef,
        sample_rate_hz=rate,
        time_to_peak_ms=ttp,
        artefact="hesitation",
        noise_l_s=0.03,
    )
    assert curve.true_pef_l_min == pytest.approx(pef)
    assert curve.time_to_peak_ms > ttp + 200  # the plateau counts from the onset
    assert abs(reported(curve) - pef) <= tolerance(pef)


# --------------------------------------------------------------------------- the observation


def test_observation_carries_the_blow() -> None:
    curve = pef_flow_curve(pef_l_min=450)
    obs = observe(curve)
    assert obs.measure == "pef"
    assert obs.unit == "L/min"
    assert obs.effective_time == T0
    assert obs.record_key == "blow:1@1795000000000"
    assert obs.comparator is None
    assert obs.quality == frozenset()
    assert obs.provenance.source == "serial:bridge-pef"
    assert str(obs.provenance.raw).startswith(f"blow 1: {len(curve.flow_l_s)} samples at 1000 Hz")
    assert "time to peak" in str(obs.provenance.raw)


def test_incomplete_blow_is_questionable() -> None:
    obs = observe(pef_flow_curve(pef_l_min=450), complete=False)
    assert obs.quality == {QualityFlag.QUESTIONABLE}
    assert obs.value is not None  # the value is kept, flagged


@pytest.mark.parametrize("complete", [True, False])
def test_simulated_blow_is_flagged_simulated(complete: bool) -> None:
    curve = pef_flow_curve(pef_l_min=450)
    [obs] = SignalStage().on_blow(
        make_blow(curve.flow_l_s, 1000, complete=complete), source="sim", simulated=True
    )
    assert QualityFlag.SIMULATED in obs.quality
    assert (QualityFlag.QUESTIONABLE in obs.quality) is not complete


# --------------------------------------------------------------------------- rejects


def rejected(stage: SignalStage, blow: Blow) -> str:
    with pytest.raises(BlowRejected) as info:
        stage.on_blow(blow, source="test", simulated=False)
    return str(info.value)


@pytest.mark.parametrize("rate", [1, 250, 499])
def test_sample_rate_below_500_hz_is_rejected(rate: int) -> None:
    msg = rejected(SignalStage(), make_blow((1.0,) * 2000, rate, blow_id=7))
    assert msg.startswith("blow 7:")
    assert f"{rate} Hz" in msg
    assert "500 Hz" in msg


def test_500_hz_is_accepted() -> None:
    assert SignalStage().on_blow(make_blow((1.0,) * 75, 500), source="t", simulated=False)


@pytest.mark.parametrize(("rate", "need"), [(500, 75), (1000, 150), (2000, 300)])
def test_fewer_than_150_ms_of_samples_is_rejected(rate: int, need: int) -> None:
    stage = SignalStage()
    msg = rejected(stage, make_blow((1.0,) * (need - 1), rate, blow_id=8))
    assert msg.startswith("blow 8:")
    assert f"{need - 1} samples, at least {need} needed" in msg
    assert stage.on_blow(make_blow((1.0,) * need, rate), source="t", simulated=False)


@pytest.mark.parametrize(
    "bad",
    [
        math.nan,
        math.inf,
        -math.inf,
        FLOW_RANGE_L_S[1] + 0.001,
        FLOW_RANGE_L_S[0] - 0.001,
        1e9,
    ],
)
@pytest.mark.parametrize("index", [0, 123, 199])
def test_unusable_sample_is_rejected_naming_blow_and_sample(bad: float, index: int) -> None:
    flow = [2.0] * 200
    flow[index] = bad
    msg = rejected(SignalStage(), make_blow(tuple(flow), 1000, blow_id=9))
    assert msg.startswith(f"blow 9: sample {index} = {bad} L/s")
    assert "sensor range" in msg


def test_samples_at_the_range_limits_are_accepted() -> None:
    lo, hi = FLOW_RANGE_L_S
    flow = (lo,) + (0.0,) * 198 + (hi,)
    [obs] = SignalStage().on_blow(make_blow(flow, 1000), source="t", simulated=False)
    assert obs.value is not None


# --------------------------------------------------------------------------- recent and stats


def test_recent_keeps_the_last_n_accepted_blows() -> None:
    stage = SignalStage(keep=3)
    for i in range(1, 6):
        stage.on_blow(make_blow((1.0,) * 150, 1000, blow_id=i), source="t", simulated=False)
    rejected(stage, make_blow((1.0,) * 10, 1000, blow_id=6))
    assert [b.blow_id for b in stage.recent] == [3, 4, 5]


def test_stats_count_blows_samples_and_rejects() -> None:
    stage = SignalStage()
    stage.on_blow(make_blow((1.0,) * 150, 1000, blow_id=1), source="t", simulated=False)
    stage.on_blow(make_blow((1.0,) * 400, 2000, blow_id=2), source="t", simulated=False)
    rejected(stage, make_blow((1.0,) * 400, 400, blow_id=3))
    rejected(stage, make_blow((math.nan,) * 400, 1000, blow_id=4))
    assert (stage.stats.blows, stage.stats.samples, stage.stats.rejected) == (2, 550, 2)
    assert [b.blow_id for b in stage.recent] == [1, 2]


# --------------------------------------------------------------------------- quality and sessions


@pytest.mark.parametrize(
    ("artefact", "flag"),
    [
        ("cough", QualityFlag.COUGH),
        ("early_stop", QualityFlag.EARLY_STOP),
        ("hesitation", QualityFlag.HESITATION),
    ],
)
def test_blow_quality_travels_as_quality_flags(artefact: Artefact, flag: QualityFlag) -> None:
    curve = pef_flow_curve(pef_l_min=450, artefact=artefact, noise_l_s=0.02, seed=4)
    obs = observe(curve)
    assert flag in obs.quality
    assert flag.value in str(obs.provenance.raw)  # with the reason in words


def test_a_slow_rise_is_flagged_and_a_clean_blow_is_not() -> None:
    assert (
        QualityFlag.SLOW_RISE in observe(pef_flow_curve(pef_l_min=450, time_to_peak_ms=160)).quality
    )
    assert observe(pef_flow_curve(pef_l_min=450, noise_l_s=0.02)).quality == frozenset()


def session_blow(stage: SignalStage, blow_id: int, pef: float, minutes: float = 0.0) -> None:
    curve = pef_flow_curve(pef_l_min=pef, noise_l_s=0.01, seed=blow_id)
    blow = Blow(
        device_id="pef1",
        blow_id=blow_id,
        record_key=f"blow:{blow_id}",
        sample_rate_hz=1000,
        flow_l_s=curve.flow_l_s,
        started_at=T0 + timedelta(minutes=minutes),
        complete=True,
    )
    stage.on_blow(blow, source="t", simulated=False)


def test_the_session_asks_for_three_blows_then_for_more_until_two_agree() -> None:
    stage = SignalStage()
    advice = []
    for i, (pef, minute) in enumerate([(400, 0), (450, 1), (500, 2), (495, 3)], start=1):
        session_blow(stage, i, pef, minute)
        out = stage.outcome("pef1")
        assert out is not None
        assert out.blow_id == i
        advice.append(blow_result(i, out).advice)
    a = m.SessionAdvice
    # 1 and 2 of 3; then 500 and 450 differ by ~50 L/min; then 500 and 495 agree
    assert advice == [a.BLOW_AGAIN, a.BLOW_AGAIN, a.BLOW_AGAIN, a.SESSION_COMPLETE]
    last = stage.outcome("pef1")
    assert last is not None
    assert last.session.blows == 4
    assert last.session.best_l_min == pytest.approx(500, abs=10)
    # the session is over: the next blow starts a new one
    session_blow(stage, 5, 480, 4)
    nxt = stage.outcome("pef1")
    assert nxt is not None
    assert nxt.session.blows == 1


def test_a_pause_longer_than_the_session_gap_starts_a_new_session() -> None:
    stage = SignalStage()
    session_blow(stage, 1, 400, 0)
    session_blow(stage, 2, 450, 1)
    gap = SESSION_GAP.total_seconds() / 60
    session_blow(stage, 3, 460, 1 + gap + 0.5)
    out = stage.outcome("pef1")
    assert out is not None
    assert out.session.blows == 1


def test_five_blows_end_the_session_even_when_not_reproducible() -> None:
    stage = SignalStage()
    for i, pef in enumerate([300, 400, 500, 600, 700], start=1):
        session_blow(stage, i, pef, i * 0.5)
    out = stage.outcome("pef1")
    assert out is not None
    result = blow_result(5, out)
    assert result.advice is m.SessionAdvice.SESSION_NOT_REPRODUCIBLE
    assert result.session_blows == 5
    assert result.session_best_l_min == pytest.approx(700, abs=15)


def test_blow_result_for_an_unusable_blow_and_its_quality_bits() -> None:
    unusable = blow_result(9, None)
    assert unusable.advice is m.SessionAdvice.BLOW_NOT_USABLE
    assert unusable.pef_l_min == 0
    stage = SignalStage()
    curve = pef_flow_curve(pef_l_min=450, artefact="cough", noise_l_s=0.02, seed=4)
    stage.on_blow(make_blow(curve.flow_l_s, 1000), source="t", simulated=False)
    out = stage.outcome("pef1")
    assert out is not None
    assert m.BlowQualityBits.COUGH in blow_result(1, out).quality


def test_a_blow_sent_again_counts_once_in_its_session() -> None:
    stage = SignalStage()
    session_blow(stage, 1, 400, 0)
    session_blow(stage, 1, 400, 0)  # the board re-sent it (its ACK was lost in an unplug)
    out = stage.outcome("pef1")
    assert out is not None
    assert out.session.blows == 1


def test_a_blow_sent_again_after_its_session_ended_does_not_start_a_new_one() -> None:
    stage = SignalStage()
    for i, pef in enumerate([450, 455, 452], start=1):
        session_blow(stage, i, pef, i * 0.5)
    done = stage.outcome("pef1")
    assert done is not None
    assert done.session.complete
    session_blow(stage, 3, 452, 1.5)  # blow 3 again
    again = stage.outcome("pef1")
    assert again is not None
    assert again.session.blows == 3
    assert again.session.complete
