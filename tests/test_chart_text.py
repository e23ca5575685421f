"""Chart words in Finnish and Swedish (cloud_ingest.web.chart_text).

Each translation has the English keys and, string by string, the English placeholders; and every
chart drawn in Finnish or Swedish on small realistic data is well-formed SVG in which no English
word is left (checked on the fixed words of each English string).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Literal
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from cloud_ingest.analytics.bp import BpReading, home_bp_summary
from cloud_ingest.analytics.cgm_metrics import agp_profile, cgm_metrics
from cloud_ingest.analytics.pef_diary import Blow, analyse_diary
from cloud_ingest.web.chart_text import CHART_TEXT
from cloud_ingest.web.charts import (
    AGP_TEXT_EN,
    BP_TEXT_EN,
    DOSE_TEXT_EN,
    PEF_TEXT_EN,
    SPARKLINE_TEXT_EN,
    TIR_TEXT_EN,
    DoseMark,
    agp_svg,
    bp_series_svg,
    dose_timeline_svg,
    pef_diary_svg,
    sparkline_svg,
    tir_bar_svg,
)
from cloud_ingest.web.i18n import Translator

NS = "{http://www.w3.org/2000/svg}"
HEL = ZoneInfo("Europe/Helsinki")
D0 = date(2026, 3, 2)
EN: dict[str, Mapping[str, str]] = {
    "pef": PEF_TEXT_EN,
    "agp": AGP_TEXT_EN,
    "tir": TIR_TEXT_EN,
    "bp": BP_TEXT_EN,
    "dose": DOSE_TEXT_EN,
    "sparkline": SPARKLINE_TEXT_EN,
}
LANGS = ("fi", "sv")
CASES = [(chart, lang) for chart in EN for lang in LANGS]
#: Strings that are the same in every language (symbols, numbers and units only), plus
#: Swedish "median", which is the Swedish word too.
SAME_AS_ENGLISH = {
    *(("pef", lang, "none") for lang in LANGS),
    *(("bp", lang, "axis_y") for lang in LANGS),
    *(("dose", lang, "legend") for lang in LANGS),
    *(
        ("tir", lang, key)
        for lang in LANGS
        for key in (
            "range_below",
            "range_between",
            "range_above",
            "percent",
            "percent_below",
            "percent_above",
        )
    ),
    ("agp", "sv", "median"),
}
PLACEHOLDER = re.compile(r"\{(\w+)\}")
WORD = re.compile(r"[A-Za-z]{4,}")
#: English words that are also Finnish or Swedish words (unit, Swedish "median").
SHARED_WORDS = {"fi": {"mmhg"}, "sv": {"mmhg", "median"}}


def placeholders(s: str) -> set[str]:
    return set(PLACEHOLDER.findall(s))


# --------------------------------------------------------------------------- the tables


def test_every_chart_has_the_three_languages_and_english_is_the_chart_default() -> None:
    assert set(CHART_TEXT) == set(EN)
    for chart, en in EN.items():
        assert set(CHART_TEXT[chart]) == {"fi", "sv", "en"}
        assert CHART_TEXT[chart]["en"] is en


@pytest.mark.parametrize(("chart", "lang"), CASES)
def test_keys_and_placeholders_match_english(chart: str, lang: str) -> None:
    en, words = EN[chart], CHART_TEXT[chart][lang]
    assert set(words) == set(en)
    for key, s in words.items():
        assert isinstance(s, str)
        assert s.strip(), (chart, lang, key)
        assert placeholders(s) == placeholders(en[key]), (chart, lang, key, s)
        # no stray braces: every "{" starts a placeholder
        assert s.count("{") == s.count("}") == len(PLACEHOLDER.findall(s)), (chart, lang, key)
        # leading spaces (sentences appended to the desc) are kept
        assert s[:1].isspace() == en[key][:1].isspace(), (chart, lang, key)


@pytest.mark.parametrize(("chart", "lang"), CASES)
def test_wording_conventions(chart: str, lang: str) -> None:
    for key, s in CHART_TEXT[chart][lang].items():
        assert "\u2013" not in s, (chart, lang, key)  # ranges use "-"
        assert "L/min" not in s, (chart, lang, key)  # flow is "l/min" in Finnish and Swedish
        assert "  " not in s, (chart, lang, key)
        same = s == EN[chart][key]
        assert same == ((chart, lang, key) in SAME_AS_ENGLISH), (chart, lang, key, s)


# --------------------------------------------------------------------------- drawn charts


def clock_for(lang: str) -> Callable[[int], str]:
    sep = "." if lang == "fi" else ":"
    return lambda m: f"{m // 60:02d}{sep}{m % 60:02d}"


def pef_report() -> object:
    """Six days; PB 480; day 0 meets both criteria, day 3 the diurnal one; day 4 is empty."""
    spec: dict[int, tuple[float | None, float | None, float | None, float | None]] = {
        0: (300, 420, 360, None),
        1: (400, 410, None, None),
        2: (390, None, None, None),
        3: (310, 450, None, 455),
        5: (405, 415, None, None),
    }
    out: list[Blow] = []
    for i, (mpre, epre, mpost, epost) in spec.items():
        d = D0 + timedelta(days=i)
        slots: tuple[
            tuple[Literal["morning", "evening"], Literal["pre", "post"], float | None], ...
        ] = (
            ("morning", "pre", mpre),
            ("evening", "pre", epre),
            ("morning", "post", mpost),
            ("evening", "post", epost),
        )
        for session, phase, v in slots:
            if v is None:
                continue
            t0 = datetime(
                d.year,
                d.month,
                d.day,
                7 if session == "morning" else 20,
                0 if phase == "pre" else 20,
            )
            for k, dv in enumerate((-10.0, 0.0, -5.0)):
                out.append(
                    Blow(
                        time=t0 + timedelta(minutes=k),
                        session=session,
                        phase=phase,
                        pef_l_min=v + dv,
                    )
                )
    return analyse_diary(out, personal_best_l_min=480)


def cgm() -> tuple[np.ndarray, np.ndarray]:
    """14 days at 5 min (mmol/L): a daily sine plus seeded noise, with lows and highs."""
    t = np.arange(0, 14 * 86400, 300, dtype=np.float64) + 1_767_225_600.0  # 2026-01-01
    tod_h = (t % 86400) / 3600
    g = 7.5 + 3 * np.sin((tod_h - 8) / 24 * 2 * np.pi)
    return t, g + np.random.default_rng(7).normal(0, 1.2, t.size)


def bp_week(*, high: bool) -> list[BpReading]:
    out = []
    for i in range(7):
        for h, m, s, d in ((7, 0, 142, 88), (7, 2, 138, 86), (21, 0, 136, 84), (21, 2, 140, 90)):
            t = datetime(2026, 3, 2 + i, h, m, tzinfo=HEL)
            out.append(BpReading(t, s + i if high else s - 20, d if high else d - 10))
    return out


def charts_in(lang: str) -> dict[str, list[str]]:
    """Each chart with data (both BP outcomes, every dose status) and without, in ``lang``."""
    tr = Translator(lang, HEL)  # type: ignore[arg-type]
    text = {chart: dict(CHART_TEXT[chart][lang]) for chart in EN}
    clock = clock_for(lang)
    t, g = cgm()
    prof = agp_profile(t, g, unit="mmol/L")
    metrics = cgm_metrics(t, g, unit="mmol/L")
    overlay = [(date(2026, 1, 3), [(30.0, 5.0), (45.0, 5.5), (200.0, 12.2)])]
    high, low = bp_week(high=True), bp_week(high=False)
    doses = [
        DoseMark(
            datetime(2026, 3, 2, 8, tzinfo=HEL), "taken", datetime(2026, 3, 2, 8, 4, tzinfo=HEL)
        ),
        DoseMark(datetime(2026, 3, 2, 20, tzinfo=HEL), "missed"),
        DoseMark(
            datetime(2026, 3, 3, 8, tzinfo=HEL), "late", datetime(2026, 3, 3, 9, 30, tzinfo=HEL)
        ),
        DoseMark(datetime(2026, 3, 3, 20, tzinfo=HEL), "taken"),
        DoseMark(datetime(2026, 3, 4, 8, tzinfo=HEL), "due"),
    ]
    t0 = datetime(2026, 3, 2, 8, tzinfo=HEL)
    spark = [(t0 + timedelta(hours=i), v) for i, v in enumerate([7.2, 8.9, 6.4, 7.7])]
    return {
        "pef": [
            pef_diary_svg(pef_report(), text=text["pef"], num=tr.num, day=tr.day),  # type: ignore[arg-type]
            pef_diary_svg(None, text=text["pef"]),
        ],
        "agp": [
            agp_svg(prof, days=overlay, text=text["agp"], num=tr.num, clock=clock),
            agp_svg(None, unit="mmol/L", text=text["agp"]),
        ],
        "tir": [
            tir_bar_svg(metrics, text=text["tir"], num=tr.num),
            tir_bar_svg(None, text=text["tir"]),
        ],
        "bp": [
            bp_series_svg(
                rd,
                summary=home_bp_summary(rd, tz=HEL),
                text=text["bp"],
                num=tr.num,
                day=tr.day,
                clock=clock,
                tz=HEL,
            )
            for rd in (high, low)
        ]
        + [bp_series_svg([], text=text["bp"])],
        "dose": [
            dose_timeline_svg(
                doses, start=D0, days=3, tz=HEL, text=text["dose"], day=tr.day, clock=clock
            ),
            dose_timeline_svg([], start=D0, days=3, tz=HEL, text=text["dose"]),
        ],
        "sparkline": [
            sparkline_svg(
                spark, text=text["sparkline"], num=tr.num, day=tr.day, decimals=1, unit="mmol/L"
            ),
            sparkline_svg([], text=text["sparkline"]),
        ],
    }


def english_words(chart: str, lang: str) -> set[str]:
    """The English words (4+ letters) of the strings the translation replaced, less the few
    that are words of the language too."""
    words = CHART_TEXT[chart][lang]
    return {
        w
        for key, en in EN[chart].items()
        if words[key] != en
        for w in WORD.findall(PLACEHOLDER.sub(" ", en))
        if w.lower() not in SHARED_WORDS[lang]
    }


@pytest.fixture(scope="module", params=LANGS)
def drawn(request: pytest.FixtureRequest) -> tuple[str, dict[str, list[str]]]:
    lang: str = request.param
    return lang, charts_in(lang)


def test_drawn_charts_are_well_formed_and_fully_translated(
    drawn: tuple[str, dict[str, list[str]]],
) -> None:
    lang, svgs = drawn
    assert set(svgs) == set(EN)
    for chart, items in svgs.items():
        words = CHART_TEXT[chart][lang]
        english = english_words(chart, lang)
        assert english, chart  # the check below has something to look for
        for i, svg in enumerate(items):
            root = ET.fromstring(svg)  # well-formed XML
            assert root.tag == f"{NS}svg"
            assert root.get("role") == "img"
            title = root.findtext(f"{NS}title") or ""
            assert title == words["title"].replace("{unit}", "mmol/L"), (chart, i)
            desc = root.findtext(f"{NS}desc") or ""
            assert desc.strip()
            text = " ".join(root.itertext())
            assert "{" not in text, (chart, i)
            assert "L/min" not in text, (chart, i)
            found = {w.lower() for w in re.findall(r"\w+", text)}
            left = sorted(w for w in english if w.lower() in found)
            assert not left, (chart, lang, i, left)
            if root.get("data-empty") == "true":
                assert words["no_data"] in text
            else:
                assert desc.startswith(PLACEHOLDER.split(words["desc"])[0]), (chart, i)


def test_drawn_charts_use_the_translated_labels(
    drawn: tuple[str, dict[str, list[str]]],
) -> None:
    """Spot checks that the data exercised the translated legends, rows and statuses."""
    lang, svgs = drawn
    pef = " ".join(ET.fromstring(svgs["pef"][0]).itertext())
    w = CHART_TEXT["pef"][lang]
    for key in ("morning_pre", "evening_post", "pre_line", "axis_y"):
        assert w[key] in pef, key
    assert w["label_diurnal"].replace("{value}", "29") in pef
    assert w["desc_pb"].replace("{pb}", "480") in pef
    tir = ET.fromstring(svgs["tir"][0])
    rows = {e.get("data-row"): " ".join(e.itertext()) for e in tir.iter() if e.get("data-row")}
    for key in ("very_low", "low", "in_range", "high", "very_high"):
        assert rows[key].startswith(CHART_TEXT["tir"][lang][key] + " "), key
    wb = CHART_TEXT["bp"][lang]
    assert wb["status_above"] in (ET.fromstring(svgs["bp"][0]).findtext(f"{NS}desc") or "")
    assert wb["status_below"] in (ET.fromstring(svgs["bp"][1]).findtext(f"{NS}desc") or "")
    dose = ET.fromstring(svgs["dose"][0])
    wd = CHART_TEXT["dose"][lang]
    legend = {
        e.get("data-legend"): " ".join(e.itertext()) for e in dose.iter() if e.get("data-legend")
    }
    assert legend == {
        "taken": f"{wd['taken']} (2)",
        "late": f"{wd['late']} (1)",
        "missed": f"{wd['missed']} (1)",
        "due": f"{wd['due']} (1)",
    }
    klo = "klo" if lang == "fi" else "kl."
    assert f"{wd['late']} {klo} {clock_for(lang)(570)}" in " ".join(dose.itertext())
