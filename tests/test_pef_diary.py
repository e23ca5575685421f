"""PEF diary analysis (DOMAIN.md §1) and the ``remon pef-report`` command body."""

from __future__ import annotations

import io
import json
import random
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_ingest.analytics.pef_diary import (
    Blow,
    DiaryCriteria,
    PefDiaryError,
    analyse_diary,
    blows_to_csv,
    parse_pef_csv,
    report_to_json,
)
from remon.pef_report import render_html, render_svg, render_text, run

EXAMPLE = Path(__file__).parent / "data" / "pef_diary_example.csv"
D0 = date(2026, 3, 2)
HOURS = {"morning": 7, "evening": 20}


def blows(
    day: date, session: str, phase: str, *values: float, hour: int | None = None
) -> list[Blow]:
    """Blows of one session, a minute apart (post-BD 20 min after the pre-BD ones)."""
    h = HOURS[session] if hour is None else hour
    t0 = datetime(day.year, day.month, day.day, h, 0 if phase == "pre" else 20)
    return [
        Blow(time=t0 + timedelta(minutes=i), session=session, phase=phase, pef_l_min=v)  # type: ignore[arg-type]
        for i, v in enumerate(values)
    ]


def one_day(
    mpre: float | None,
    epre: float | None,
    mpost: float | None = None,
    epost: float | None = None,
    day: date = D0,
) -> list[Blow]:
    out: list[Blow] = []
    for session, phase, v in (
        ("morning", "pre", mpre),
        ("morning", "post", mpost),
        ("evening", "pre", epre),
        ("evening", "post", epost),
    ):
        if v is not None:
            out += blows(day, session, phase, v, v - 10, v - 5)
    return out


# --------------------------------------------------------------------------- daily metrics

DIURNAL_CASES = [
    # mpre, epre, convention, percent, l_min, meets
    pytest.param(240, 300, "finnish", 20.0, 60.0, True, id="finnish-exactly-20%-and-60"),
    pytest.param(300, 240, "finnish", 20.0, 60.0, True, id="evening-lower"),
    pytest.param(240.1, 300, "finnish", 59.9 / 3, 59.9, False, id="just-below-both"),
    pytest.param(241, 301, "finnish", 6000 / 301, 60.0, False, id="60-but-below-20%"),
    pytest.param(200, 250, "finnish", 20.0, 50.0, False, id="20%-but-below-60"),
    pytest.param(340, 400, "finnish", 15.0, 60.0, False, id="60-and-15%"),
    pytest.param(240.8, 301, "finnish", 20.0, 60.2, True, id="decimal-exact-20%"),
    pytest.param(200.4, 260.4, "finnish", 6000 / 260.4, 60.0, True, id="decimal-exact-60"),
    pytest.param(400, 400, "finnish", 0.0, 0.0, False, id="no-variation"),
    pytest.param(300, 240, "gina", 22.222222, 60.0, True, id="gina-same-day"),
    pytest.param(270, 330, "gina", 20.0, 60.0, True, id="gina-exactly-20%"),
    pytest.param(270, 330, "finnish", 6000 / 330, 60.0, False, id="finnish-same-day-18%"),
    pytest.param(271, 330, "gina", 5900 / 300.5, 59.0, False, id="gina-just-below"),
]


@pytest.mark.parametrize(("mpre", "epre", "convention", "pct", "l_min", "meets"), DIURNAL_CASES)
def test_diurnal_variation_per_convention(
    mpre: float, epre: float, convention: str, pct: float, l_min: float, meets: bool
) -> None:
    r = analyse_diary(one_day(mpre, epre), convention=convention)  # type: ignore[arg-type]
    d = r.days[0]
    assert d.diurnal_variation_percent == pytest.approx(pct, abs=1e-6)
    assert d.diurnal_variation_l_min == pytest.approx(l_min, abs=1e-9)
    assert d.diurnal_meets is meets
    assert d.day_highest_l_min == max(mpre, epre)
    assert d.day_lowest_l_min == min(mpre, epre)


def test_decimal_boundaries_are_exact_not_float() -> None:
    # (301 - 240.8) / 301 is exactly 20 % and 260.4 - 200.4 exactly 60 L/min in decimal;
    # naive float arithmetic falls just below both
    assert (301 - 240.8) / 301 * 100 < 20.0
    assert 260.4 - 200.4 < 60.0
    for lo, hi in ((240.8, 301), (200.4, 260.4)):
        d = analyse_diary(one_day(lo, hi)).days[0]
        assert d.diurnal_meets is True
    bd = analyse_diary(one_day(200.4, None, mpost=260.4)).days[0]
    assert bd.bd_response_l_min == 60.0
    assert bd.bd_meets is True


def test_post_bd_in_max_enters_only_the_highest() -> None:
    day = one_day(300, 320, mpost=360, epost=340)
    without = analyse_diary(day).days[0]
    with_post = analyse_diary(day, post_bd_in_max=True).days[0]
    assert without.diurnal_variation_l_min == 20.0
    assert without.diurnal_variation_percent == pytest.approx(6.25)
    assert with_post.day_highest_l_min == 360
    assert with_post.day_lowest_l_min == 300  # the lowest stays a pre-BD value
    assert with_post.diurnal_variation_percent == pytest.approx(100 / 6)
    assert with_post.diurnal_variation_l_min == 60.0


BD_CASES = [
    # pre, post, percent, l_min, meets
    pytest.param(400, 460, 15.0, 60.0, True, id="exactly-15%-and-60"),
    pytest.param(400, 459, 14.75, 59.0, False, id="just-below-both"),
    pytest.param(300, 360, 20.0, 60.0, True, id="20%-and-60"),
    pytest.param(300, 345, 15.0, 45.0, False, id="15%-below-60"),
    pytest.param(500, 560, 12.0, 60.0, False, id="60-below-15%"),
    pytest.param(400, 380, -5.0, -20.0, False, id="negative-not-clamped"),
]


@pytest.mark.parametrize(("pre", "post", "pct", "l_min", "meets"), BD_CASES)
def test_bd_response(pre: float, post: float, pct: float, l_min: float, meets: bool) -> None:
    d = analyse_diary(one_day(pre, None, mpost=post)).days[0]
    assert d.bd_response_percent == pytest.approx(pct)
    assert d.bd_response_l_min == pytest.approx(l_min)
    assert d.bd_response_session == "morning"
    assert d.bd_meets is meets
    assert d.diurnal_variation_percent is None
    assert d.diurnal_not_computed == "evening pre-BD session missing"


def test_day_bd_figure_is_the_session_that_meets() -> None:
    # morning: 22.5 % but 45 L/min (not met); evening: 15 % and 60 L/min (met)
    d = analyse_diary(one_day(200, 400, mpost=245, epost=460)).days[0]
    assert d.bd_meets is True
    assert d.bd_response_session == "evening"
    assert d.bd_response_percent == pytest.approx(15.0)
    assert {r.session: r.meets for r in d.bd_responses} == {"morning": False, "evening": True}


def test_day_bd_figure_is_the_larger_percent_when_none_meets() -> None:
    d = analyse_diary(one_day(200, 400, mpost=230, epost=440)).days[0]
    assert d.bd_meets is False
    assert d.bd_response_session == "morning"
    assert d.bd_response_percent == pytest.approx(15.0)


ZONE_CASES = [
    pytest.param(400, "green", 80.0, id="exactly-80%-green"),
    pytest.param(399.5, "yellow", 79.9, id="just-below-80%"),
    pytest.param(250, "yellow", 50.0, id="exactly-50%-yellow"),
    pytest.param(249.5, "red", 49.9, id="just-below-50%"),
    pytest.param(520, "green", 104.0, id="above-personal-best"),
]


@pytest.mark.parametrize(("best", "zone", "pct"), ZONE_CASES)
def test_zones_against_personal_best(best: float, zone: str, pct: float) -> None:
    d = analyse_diary(one_day(best, best - 20), personal_best_l_min=500).days[0]
    assert d.day_best_l_min == best
    assert d.zone == zone
    assert d.percent_of_personal_best == pytest.approx(pct)


def test_no_personal_best_no_zone_and_a_note() -> None:
    r = analyse_diary(one_day(300, 320))
    assert r.days[0].zone is None
    assert "zones not assessed: no personal best given" in r.notes


# --------------------------------------------------------------------------- period, missing


def test_missing_sessions_and_missing_days_are_listed_not_invented() -> None:
    diary = (
        one_day(300, 380, mpost=360, epost=400, day=D0)
        + one_day(310, None, mpost=350, day=D0 + timedelta(days=1))
        + one_day(None, 390, day=D0 + timedelta(days=3))
    )
    r = analyse_diary(diary)
    assert [d.date for d in r.days] == [D0 + timedelta(days=i) for i in range(4)]
    assert r.missing_days == (D0 + timedelta(days=2),)
    assert r.days_with_data == 3
    d1, d2, d3 = r.days[1], r.days[2], r.days[3]
    assert d1.missing == ("evening pre-BD session missing", "evening post-BD session missing")
    assert d1.evening_pre_best is None
    assert d1.diurnal_variation_percent is None
    assert d1.bd_response_session == "morning"
    assert d2.missing == ("no blows recorded",)
    assert d2.n_blows == 0
    assert d2.diurnal_not_computed == "no blows recorded"
    assert d2.bd_response_percent is None
    assert d3.diurnal_not_computed == "morning pre-BD session missing"
    assert d3.bd_not_computed == "no session with both pre-BD and post-BD blows"
    assert any("days without any blow: 2026-03-04" in n for n in r.notes)


def test_diary_without_post_bd_does_not_list_post_sessions_as_missing() -> None:
    r = analyse_diary(one_day(300, 400) + one_day(320, None, day=D0 + timedelta(days=1)))
    assert r.days[0].missing == ()
    assert r.days[1].missing == ("evening pre-BD session missing",)
    assert r.days[0].bd_not_computed == "no post-BD blows in the diary"
    assert "no post-BD blows in the diary: BD response not assessed" in r.notes
    assert r.bd.days_evaluable == 0
    assert r.bd.met is False


@pytest.mark.parametrize(
    ("n_days", "note"),
    [
        (3, "shorter than the 7-day protocol"),
        (7, None),
        (14, None),
        (16, "counted over the whole period, not over a 14-day window"),
    ],
)
def test_period_length_notes(n_days: int, note: str | None) -> None:
    diary = [b for i in range(n_days) for b in one_day(300, 400, day=D0 + timedelta(days=i))]
    r = analyse_diary(diary)
    assert r.period_days == n_days
    period_notes = [n for n in r.notes if "the diary covers" in n]
    if note is None:
        assert period_notes == []
    else:
        assert len(period_notes) == 1
        assert note in period_notes[0]


def test_criteria_need_three_days_and_list_them() -> None:
    days = [D0 + timedelta(days=i) for i in range(14)]
    meeting = {days[1], days[5], days[9]}
    diary: list[Blow] = []
    for d in days:
        diary += one_day(300, 380, day=d) if d in meeting else one_day(360, 380, day=d)
    r = analyse_diary(diary)
    assert r.diurnal.met is True
    assert r.diurnal.days_meeting == tuple(sorted(meeting))
    assert r.diurnal.days_evaluable == 14
    assert r.diurnal.threshold == "≥ 20 % and ≥ 60 L/min"
    assert r.diurnal.source == "DOMAIN.md §1 diagnostic support rule"
    assert "supports the clinician's assessment" in r.diurnal.statement
    two = analyse_diary([b for b in diary if b.local_date != days[9]])
    assert two.diurnal.met is False
    assert two.diurnal.statement.startswith("criterion not met: 2 of the required 3 days")
    for text in (r.diurnal.statement, two.diurnal.statement, render_text(r)):
        assert "asthma" not in text.lower()


def test_criteria_overrides_are_marked() -> None:
    c = DiaryCriteria(diurnal_percent=15.0, required_days=2)
    r = analyse_diary(one_day(340, 400) + one_day(340, 400, day=D0 + timedelta(days=1)), criteria=c)
    assert r.diurnal.met is True
    assert r.diurnal.threshold == "≥ 15 % and ≥ 60 L/min"
    assert r.diurnal.source.startswith("clinician override")
    with pytest.raises(PefDiaryError, match="zone_red_percent"):
        DiaryCriteria(zone_red_percent=90.0)


def test_gina_period_figure_is_the_mean_of_daily_values() -> None:
    diary = one_day(300, 240) + one_day(270, 330, day=D0 + timedelta(days=1))
    diary += one_day(300, None, day=D0 + timedelta(days=2))
    r = analyse_diary(diary, convention="gina")
    assert r.days_with_diurnal_variation == 2
    assert r.mean_diurnal_variation_percent == pytest.approx((200 / 9 + 20.0) / 2)
    assert report_to_json(r)["summary"]["mean_diurnal_variation_percent"] == 21.1


def test_session_quality_notes() -> None:
    diary = (
        blows(D0, "morning", "pre", 400, 370, 360)  # two best 30 apart: not reproducible
        + blows(D0, "evening", "pre", 420, 410)  # 2 blows
        + blows(D0, "morning", "post", 450, 445, 440, 430, 420, 410)  # 6 blows
        + blows(D0, "evening", "post", 450, 430, 440)  # fine (20 apart is reproducible)
    )
    r = analyse_diary(diary)
    notes = "\n".join(r.notes)
    assert "2026-03-02 morning pre-BD: the two best blows differ by 30 L/min" in notes
    assert "2026-03-02 evening pre-BD: 2 blows (protocol: at least 3)" in notes
    assert "2026-03-02 morning post-BD: 6 blows (protocol: about 5 at most)" in notes
    assert "evening post-BD" not in notes
    sessions = {(s.session, s.phase): s for s in r.days[0].sessions}
    assert sessions["morning", "pre"].reproducible is False
    assert sessions["evening", "post"].reproducible is True
    assert sessions["evening", "post"].two_best_diff_l_min == 10.0
    assert sessions["morning", "post"].best == 450


def test_single_blow_session_reproducibility_unknown() -> None:
    r = analyse_diary(blows(D0, "morning", "pre", 400) + blows(D0, "evening", "pre", 420))
    s = r.days[0].sessions[0]
    assert s.reproducible is None
    assert s.two_best_diff_l_min is None
    assert any("1 blow (protocol: at least 3)" in n for n in r.notes)


# --------------------------------------------------------------------------- dates, DST

DST_CSV = """time,session,phase,pef_l_min
2026-03-28T07:05:00+02:00,morning,pre,330
2026-03-28T07:06:00+02:00,morning,pre,320
2026-03-28T20:30:00+02:00,evening,pre,420
2026-03-28T20:31:00+02:00,evening,pre,410
2026-03-29T00:40:00+02:00,evening,pre,400
2026-03-29T07:05:00+03:00,morning,pre,320
2026-03-29T07:06:00+03:00,morning,pre,330
2026-03-29T20:30:00+03:00,evening,pre,410
2026-10-25T03:30:00+03:00,morning,pre,350
2026-10-25T03:30:00+02:00,morning,pre,350
2026-10-25T20:30:00+02:00,evening,pre,430
"""


def test_dst_change_days_are_dated_by_the_local_wall_clock() -> None:
    parsed = parse_pef_csv(DST_CSV)
    assert len(parsed) == 11  # the repeated autumn hour is two blows, not a duplicate
    r = analyse_diary(parsed)
    by_date = {d.date: d for d in r.days}
    spring = by_date[date(2026, 3, 29)]
    # 00:40+02:00 is 2026-03-28 22:40 UTC but the patient's date is the 29th
    assert spring.evening_pre_best == 410
    assert spring.sessions[-1].values == (400.0, 410.0)
    assert spring.morning_pre_best == 330
    assert spring.diurnal_variation_l_min == 80
    assert by_date[date(2026, 3, 28)].diurnal_variation_l_min == 90
    autumn = by_date[date(2026, 10, 25)]
    assert autumn.sessions[0].values == (350.0, 350.0)
    assert autumn.diurnal_variation_percent == pytest.approx(80 / 430 * 100)
    assert r.period_days == (date(2026, 10, 25) - date(2026, 3, 28)).days + 1
    assert any("row 6: evening blow at 00:40" in n for n in r.notes)
    assert not any("03:30" in n for n in r.notes)  # a morning blow in the night: no note


def test_naive_and_aware_times_mix_and_unsorted_input_is_sorted() -> None:
    text = (
        "time,session,phase,pef_l_min\n"
        "2026-03-02T20:00:00,evening,pre,400\n"
        "2026-03-02T07:00:00+02:00,morning,pre,300\n"
        "2026-03-02T07:01,morning,pre,310\n"
    )
    parsed = parse_pef_csv(text)
    assert [b.row for b in parsed] == [3, 4, 2]
    d = analyse_diary(parsed).days[0]
    assert (d.morning_pre_best, d.evening_pre_best) == (310, 400)


# --------------------------------------------------------------------------- parsing errors

HEADER = "time,session,phase,pef_l_min\n"
OK_ROW = "2026-03-02T07:00:00,morning,pre,400\n"

BAD_INPUT = [
    pytest.param("", "empty file", id="empty"),
    pytest.param("\n\n", "empty file", id="blank-lines-only"),
    pytest.param(HEADER, "no blows", id="header-only"),
    pytest.param(OK_ROW + OK_ROW, "row 1: no header", id="no-header"),
    pytest.param("time,session,pef_l_min\n", "row 1: missing column(s) 'phase'", id="missing-col"),
    pytest.param(
        "time,session,phase,pef_l_min,note\n", "row 1: unexpected column(s) 'note'", id="extra-col"
    ),
    pytest.param(
        "time,session,phase,pef_l_s\n", "row 1: column 'pef_l_s': PEF must be given in L/min",
        id="unit-l-s",
    ),
    pytest.param("time,session,phase,pef\n", "in a column named 'pef_l_min'", id="unit-missing"),
    pytest.param("time,time,phase,pef_l_min\n", "row 1: column(s) repeated: time", id="dup-col"),
    pytest.param("time;session;phase;pef_l_min\n", "row 1: the columns are separated by ';'",
                 id="semicolons"),
    pytest.param("\ntime,session,phase,pef_l_min,\n", "row 2: a column without a name",
                 id="trailing-comma"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre\n", "row 2: expected 4 fields", id="few"),
    pytest.param(HEADER + OK_ROW.strip() + ",x\n", "row 2: expected 4 fields", id="many"),
    pytest.param(HEADER + OK_ROW + "yesterday,morning,pre,400\n", "row 3: time 'yesterday'",
                 id="time"),
    pytest.param(HEADER + "2026-03-02,morning,pre,400\n", "row 2: time '2026-03-02' has no time",
                 id="date-only"),
    pytest.param(HEADER + "2026-02-30T07:00,morning,pre,400\n", "row 2: time", id="bad-date"),
    pytest.param(HEADER + "2026-03-02T07:00,noon,pre,400\n", "row 2: session 'noon'", id="sess"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,during,400\n", "row 2: phase 'during'",
                 id="phase"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre,abc\n", "row 2: PEF 'abc' is not a number",
                 id="nonnumeric"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre,\n", "row 2: PEF is empty", id="empty-pef"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre,nan\n", "row 2: PEF 'nan' is not a finite",
                 id="nan"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre,inf\n", "row 2: PEF 'inf' is not a finite",
                 id="inf"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre,49.9\n",
                 "row 2: PEF 49.9 L/min is outside the meter range 50-900 L/min", id="low"),
    pytest.param(HEADER + "2026-03-02T07:00,morning,pre,900.5\n",
                 "row 2: PEF 900.5 L/min is outside the meter range", id="high"),
    pytest.param(HEADER + OK_ROW + "\n" + OK_ROW, "rows 2 and 4: the same blow twice", id="dup"),
    pytest.param(HEADER + OK_ROW + "2026-03-02T07:00:00+00:00,morning,pre,400\n" + OK_ROW,
                 "rows 2 and 4", id="dup-after-other"),
    pytest.param(HEADER + '2026-03-02T07:00,morning,pre,"400\n', "row 2", id="unclosed-quote"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_INPUT)
def test_bad_input_is_rejected_with_the_row(text: str, message: str) -> None:
    with pytest.raises(PefDiaryError) as info:
        parse_pef_csv(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_bad_rows_are_reported_at_once() -> None:
    text = HEADER + OK_ROW + "x,morning,pre,400\n" + "2026-03-02T08:00,morning,pre,1000\n"
    with pytest.raises(PefDiaryError) as info:
        parse_pef_csv(text)
    assert str(info.value).startswith("2 problems in the diary:")
    assert [e.split(":")[0] for e in info.value.errors] == ["row 3", "row 4"]


def test_meter_range_boundaries_accepted_and_bom_blank_lines_case() -> None:
    text = (
        "\ufeffTime, Session ,PHASE,PEF_L_MIN\n\n"
        "2026-03-02T07:00,Morning,PRE,50\n"
        "2026-03-02T20:00, evening , pre , 900\n"
    )
    parsed = parse_pef_csv(text)
    assert [(b.row, b.session, b.phase, b.pef_l_min) for b in parsed] == [
        (3, "morning", "pre", 50.0),
        (4, "evening", "pre", 900.0),
    ]


def test_parse_accepts_an_iterable_of_lines_and_column_order() -> None:
    lines = ["pef_l_min,phase,session,time\n", "400,pre,morning,2026-03-02T07:00\n"]
    (b,) = parse_pef_csv(iter(lines))
    assert (b.pef_l_min, b.phase, b.session, b.row) == (400.0, "pre", "morning", 2)


def test_a_date_typo_spanning_years_is_refused_with_the_rows() -> None:
    text = HEADER + OK_ROW + "2062-03-02T20:00,evening,pre,400\n"
    with pytest.raises(PefDiaryError, match=r"spans 13150 days \(row 2: 2026-03-02 to row 3: 2062"):
        analyse_diary(parse_pef_csv(text))


def test_analyse_rejects_bad_arguments() -> None:
    with pytest.raises(PefDiaryError, match="no blows"):
        analyse_diary([])
    with pytest.raises(PefDiaryError, match="convention"):
        analyse_diary(one_day(300, 400), convention="bts")  # type: ignore[arg-type]
    with pytest.raises(PefDiaryError, match="personal best"):
        analyse_diary(one_day(300, 400), personal_best_l_min=float("nan"))
    with pytest.raises(PefDiaryError, match="session"):
        Blow(time=datetime(2026, 3, 2, 7), session="noon", phase="pre", pef_l_min=300)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- JSON, example


def test_json_has_the_required_keys_rounding_and_nulls() -> None:
    r = analyse_diary(
        one_day(301, 241, mpost=350) + one_day(300, None, day=D0 + timedelta(days=1)),
        personal_best_l_min=450,
    )
    j = report_to_json(r)
    json.dumps(j, allow_nan=False)
    assert j["convention"] == "finnish"
    day_keys = {
        "date",
        "morning_pre_best",
        "evening_pre_best",
        "diurnal_variation_percent",
        "diurnal_variation_l_min",
        "bd_response_percent",
        "bd_response_l_min",
    }
    for d in j["days"]:
        assert day_keys <= d.keys()
    d0, d1 = j["days"]
    assert d0["date"] == "2026-03-02"
    assert d0["diurnal_variation_percent"] == 19.9  # 19.933... rounded in output only
    assert r.days[0].diurnal_variation_percent == pytest.approx(6000 / 301)
    assert d0["bd_response_percent"] == 16.3
    assert d1["evening_pre_best"] is None
    assert d1["diurnal_variation_percent"] is None
    assert d1["diurnal_variation_l_min"] is None
    assert d1["bd_response_percent"] is None
    assert d1["bd_response_l_min"] is None
    for name in ("diurnal_variation", "bd_response"):
        crit = j["criteria"][name]
        assert {"met", "days_meeting", "required_days", "threshold", "source"} <= crit.keys()
        assert crit["required_days"] == 3
    assert j["period"]["days"] == 2


def test_the_example_diary() -> None:
    r = analyse_diary(parse_pef_csv(EXAMPLE.read_text()))
    assert (r.first_date, r.last_date, r.period_days, r.days_with_data) == (
        date(2026, 3, 2),
        date(2026, 3, 15),
        14,
        14,
    )
    j = report_to_json(r)
    assert j["criteria"]["diurnal_variation"]["days_meeting"] == [
        "2026-03-03",
        "2026-03-05",
        "2026-03-08",
        "2026-03-13",
    ]
    assert j["criteria"]["bd_response"]["days_meeting"] == [
        "2026-03-02",
        "2026-03-03",
        "2026-03-08",
    ]
    assert r.diurnal.met
    assert r.bd.met
    assert r.days[5].missing == (
        "evening pre-BD session missing",
        "evening post-BD session missing",
    )
    assert any("2026-03-10 morning pre-BD: the two best blows differ by 25" in n for n in r.notes)
    gina = analyse_diary(parse_pef_csv(EXAMPLE.read_text()), convention="gina")
    assert len(gina.diurnal.days_meeting) >= len(r.diurnal.days_meeting)


# --------------------------------------------------------------------------- CLI body


def test_run_text_json_and_html(tmp_path: Path) -> None:
    out = io.StringIO()
    html = tmp_path / "report.html"
    assert (
        run(EXAMPLE, as_json=False, html=html, convention="finnish", post_bd_in_max=False, out=out)
        == 0
    )
    text = out.getvalue()
    assert "Convention: Finnish" in text
    assert "2026-03-13" in text
    assert "criterion met on 4 days" in text
    assert f"HTML report written to {html}" in text
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "Convention: GINA" not in page
    assert "Convention: Finnish" in page

    out = io.StringIO()
    assert (
        run(EXAMPLE, as_json=True, html=None, convention="gina", post_bd_in_max=True, out=out) == 0
    )
    j = json.loads(out.getvalue())
    assert j["convention"] == "gina"
    assert j["post_bd_in_max"] is True
    assert len(j["days"]) == 14


def test_html_is_well_formed_and_escaped() -> None:
    r = analyse_diary(one_day(300, 400, mpost=380), personal_best_l_min=450)
    svg = render_svg(r)
    root = ElementTree.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 0  # one day only
    page = render_html(r)

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.text: list[str] = []

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    p = Collect()
    p.feed(page)
    assert "personal best 450 L/min" in "".join(p.text)
    assert "&lt;" not in page  # nothing needed escaping here...
    # ...but notes are escaped: a hostile note cannot open a tag
    evil = analyse_diary(one_day(300, 400))
    object.__setattr__(evil, "notes", ("<script>alert(1)</script>",))
    assert "<script>" not in render_html(evil)
    assert "&lt;script&gt;" in render_html(evil)


def test_run_errors_go_to_stderr_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + OK_ROW + "2026-03-02T20:00,evening,pre,1200\n")
    out = io.StringIO()
    code = run(bad, as_json=True, html=None, convention="finnish", post_bd_in_max=False, out=out)
    assert code == 2
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: row 3: PEF 1200 L/min is outside the meter range")
    for path, conv, msg in (
        (tmp_path / "nope.csv", "finnish", "No such file"),
        (EXAMPLE, "bts", "convention 'bts'"),
    ):
        assert run(path, as_json=False, html=None, convention=conv, post_bd_in_max=False,
                   out=out) == 2  # fmt: skip
        assert msg in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "2026-03-02T07:00,morning,pre,400 \xe4\n".encode("latin-1"))
    assert run(latin, as_json=False, html=None, convention="finnish", post_bd_in_max=False,
               out=out) == 2  # fmt: skip
    assert "not UTF-8" in capsys.readouterr().err
    html = tmp_path / "no-such-dir" / "r.html"
    assert run(EXAMPLE, as_json=False, html=html, convention="finnish", post_bd_in_max=False,
               out=out) == 2  # fmt: skip
    assert str(html) in capsys.readouterr().err


# --------------------------------------------------------------------------- properties

pef = st.integers(min_value=100, max_value=1800).map(lambda x: x / 2)  # 50-900 in 0.5 steps
blow_st = st.builds(
    lambda day, session, phase, minute, v: Blow(
        time=datetime(2026, 3, 2, HOURS[session], 0) + timedelta(days=day, minutes=minute),
        session=session,
        phase=phase,
        pef_l_min=v,
    ),
    st.integers(0, 15),
    st.sampled_from(["morning", "evening"]),
    st.sampled_from(["pre", "post"]),
    st.integers(0, 59),
    pef,
)
diaries = st.lists(blow_st, min_size=1, max_size=60).map(
    lambda bs: list({(b.time, b.session, b.phase, b.pef_l_min): b for b in bs}.values())
)


@settings(max_examples=80, deadline=None)
@given(diaries, st.randoms(use_true_random=False), st.booleans())
def test_property_daily_relations_and_permutation_invariance(
    diary: list[Blow], rnd: random.Random, post_in_max: bool
) -> None:
    fi = analyse_diary(diary, post_bd_in_max=post_in_max)
    gi = analyse_diary(diary, convention="gina", post_bd_in_max=post_in_max)
    for f, g in zip(fi.days, gi.days, strict=True):
        assert (f.diurnal_variation_percent is None) == (g.diurnal_variation_percent is None)
        if f.diurnal_variation_percent is None or g.diurnal_variation_percent is None:
            assert f.diurnal_not_computed
            continue
        fp, gp = f.diurnal_variation_percent, g.diurnal_variation_percent
        assert 0 <= fp < 100
        assert fp <= gp + 1e-9
        x = fp / 100
        assert gp == pytest.approx(200 * x / (2 - x), abs=1e-9)  # G = 2F / (2 - F)
        assert f.diurnal_variation_l_min == pytest.approx(
            (f.day_highest_l_min or 0) - (f.day_lowest_l_min or 0)
        )
        if f.diurnal_meets:
            assert g.diurnal_meets  # GINA's % is never smaller
    for c in (fi.diurnal, fi.bd):
        assert c.met == (len(c.days_meeting) >= 3)
        assert list(c.days_meeting) == sorted(c.days_meeting)
    assert fi.days_with_data + len(fi.missing_days) == fi.period_days == len(fi.days)
    shuffled = diary[:]
    rnd.shuffle(shuffled)
    assert report_to_json(analyse_diary(shuffled, post_bd_in_max=post_in_max)) == report_to_json(fi)


@settings(max_examples=60, deadline=None)
@given(diaries, st.randoms(use_true_random=False))
def test_property_csv_round_trip_and_row_permutation(diary: list[Blow], rnd: random.Random) -> None:
    text = blows_to_csv(diary)
    lines = text.splitlines()
    body = lines[1:]
    rnd.shuffle(body)
    parsed = parse_pef_csv("\n".join([lines[0], *body]))
    assert sorted((b.time, b.session, b.phase, b.pef_l_min) for b in parsed) == sorted(
        (b.time, b.session, b.phase, b.pef_l_min) for b in diary
    )

    assert _without_rows(report_to_json(analyse_diary(parsed))) == _without_rows(
        report_to_json(analyse_diary(diary))
    )


def _without_rows(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _without_rows(v) for k, v in obj.items() if k != "rows"}
    if isinstance(obj, list):
        return [_without_rows(v) for v in obj]
    return obj


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet='0123456789-T:+,.\n aeimnoprstvg_"', max_size=40), max_size=8))
def test_property_parser_fails_only_with_pef_diary_error(lines: list[str]) -> None:
    text = "\n".join(["time,session,phase,pef_l_min", *lines])
    try:
        parsed = parse_pef_csv(text)
    except PefDiaryError as exc:
        assert str(exc)
    else:
        assert all(50 <= b.pef_l_min <= 900 for b in parsed)
        assert [b.row for b in parsed] == [b.row for b in sorted(parsed, key=_key)]


def _key(b: Blow) -> tuple[datetime, float, str, str, float, int]:
    off = b.time.utcoffset()
    return (
        b.wall_time,
        -(off.total_seconds() if off else 0.0),
        b.session,
        b.phase,
        b.pef_l_min,
        b.row or 0,
    )
