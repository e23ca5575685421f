"""The web UI's words and formats (cloud_ingest.web.i18n): a complete catalogue in Finnish,
Swedish and English with the same placeholders, the language cookie's parsing, CLDR number and
date formats through Babel, readings written without losing their comparator, and every key the
templates and page handlers use present in the catalogue (parsed from their sources, so a typo
in a template fails here and not in front of a nurse)."""

from __future__ import annotations

import re
import string
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import get_args
from zoneinfo import ZoneInfo

import pytest
from babel.numbers import get_decimal_symbol, get_group_symbol

import cloud_ingest.web as web_pkg
from cloud_ingest.analytics.pef_diary import CONVENTIONS, Blow, Session, analyse_diary
from cloud_ingest.api.schemas import AlertOut, ThresholdOut
from cloud_ingest.care import Audience, Role
from cloud_ingest.rules import device_health, dispenser, pef_zones, silence
from cloud_ingest.rules.engine import EventAction
from cloud_ingest.rules.lifecycle import AlertStateName
from cloud_ingest.rules.thresholds import DEFAULTS_BY_CONDITION, Priority
from cloud_ingest.service import _ACTION_WORD
from cloud_ingest.web.i18n import (
    DEFAULT_LANG,
    LANGS,
    Translator,
    catalog_keys,
    parse_lang,
    value_text,
)
from device_profiles.codes import MEASURES

HEL = ZoneInfo("Europe/Helsinki")
WEB_DIR = Path(web_pkg.__file__).parent
TEMPLATES = sorted((WEB_DIR / "templates").glob("*.html"))
#: The page handlers that call the translator themselves (error messages, the SSE text).
HANDLERS = sorted(p for p in WEB_DIR.glob("*.py") if p.name != "i18n.py")
#: Catalogue entries whose Finnish text may equal the English (abbreviations and symbols).
SAME_IN_FINNISH = {"patient.gmi", "word.none"}


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


# -- the catalogue -------------------------------------------------------------------------------


def test_every_key_has_a_non_empty_finnish_swedish_and_english_text() -> None:
    catalog = catalog_keys()
    assert len(catalog) > 100  # the whole catalogue, not an empty mapping
    bad = {
        key: texts
        for key, texts in catalog.items()
        if len(texts) != 3 or any(not isinstance(s, str) or not s.strip() for s in texts)
    }
    assert bad == {}


def test_placeholders_are_the_same_in_all_three_languages() -> None:
    catalog = catalog_keys()
    with_fields = 0
    for key, (fi, sv, en) in catalog.items():
        names = [placeholders(fi), placeholders(sv), placeholders(en)]
        assert names[0] == names[1] == names[2], (key, names)
        with_fields += bool(names[0])
        # each text is a valid format string: filling every field leaves no brace behind
        filled = [s.format(**dict.fromkeys(names[0], 7)) for s in (fi, sv, en)]
        assert all("{" not in s and "}" not in s for s in filled), (key, filled)
    assert with_fields >= 3  # the check above saw real placeholders


def test_finnish_is_not_left_in_english() -> None:
    catalog = catalog_keys()
    untranslated = sorted(k for k, (fi, _sv, en) in catalog.items() if fi == en)
    assert set(untranslated) <= SAME_IN_FINNISH, untranslated


@pytest.mark.parametrize("lang", LANGS)
def test_the_translator_fills_placeholders_and_looks_up_its_language(lang: str) -> None:
    t = Translator(parse_lang(lang), HEL)
    fi, sv, en = catalog_keys()["alert.snooze_help"]
    expected = {"fi": fi, "sv": sv, "en": en}[lang]
    text = t("alert.snooze_help", max=240)
    assert "240" in text
    assert "{" not in text
    assert text == expected.replace("{max}", "240")


def test_every_condition_the_rules_raise_has_a_title_in_the_catalogue() -> None:
    conditions = {
        *DEFAULTS_BY_CONDITION,
        *(r.condition for r in dispenser.DEFAULT_DISPENSER_RULES),
        *(r.condition for r in device_health.DEFAULT_DEVICE_HEALTH_RULES),
        silence.CGM_STALE,
        silence.CGM_STALE_URGENT,
        silence.PEF_SESSION_MISSED,
        silence.SITE_OFFLINE,
        pef_zones.PEF_ZONE_RED,
        pef_zones.PEF_ZONE_YELLOW,
    }
    known = {k.removeprefix("condition:") for k in catalog_keys() if k.startswith("condition:")}
    assert sorted(conditions - known) == []
    t = Translator("fi", HEL)
    for c in conditions:
        assert t.condition(c, "FALLBACK") != "FALLBACK"


def test_every_measure_has_a_name_in_the_catalogue() -> None:
    known = {k.removeprefix("measure:") for k in catalog_keys() if k.startswith("measure:")}
    assert sorted(set(MEASURES) - known) == []
    assert Translator("sv", HEL).measure("spo2") != "spo2"
    assert Translator("sv", HEL).measure("no.such.measure") == "no.such.measure"


def test_every_audit_trail_action_has_a_word() -> None:
    actions = {*get_args(EventAction), *_ACTION_WORD.values(), "escalated"}
    t = Translator("fi", HEL)
    missing = sorted(a for a in actions if t.action(a) == a)
    assert missing == []


# -- the language cookie -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["fi", "sv", "en"])
def test_parse_lang_accepts_the_three_languages(code: str) -> None:
    assert parse_lang(code) == code


@pytest.mark.parametrize(
    "value", [None, "", "de", "FI", "SV", "En", " fi", "fi ", "sv-FI", "en_GB", "fin", "sv;q=1"]
)
def test_parse_lang_falls_back_to_finnish_for_anything_else(value: str | None) -> None:
    assert DEFAULT_LANG == "fi"
    assert parse_lang(value) == "fi"


# -- numbers and dates ---------------------------------------------------------------------------


def test_finnish_numbers_have_a_decimal_comma_and_a_non_breaking_space_group() -> None:
    t = Translator("fi", HEL)
    group = get_group_symbol("fi")
    assert group in ("\u00a0", "\u202f")  # CLDR: a (narrow) no-break space, never a plain one
    assert get_decimal_symbol("fi") == ","
    assert t.num(1234.5, 1) == f"1{group}234,5"
    assert t.num(1234567.25, 2) == f"1{group}234{group}567,25"
    assert t.num(7.5, 1) == "7,5"
    assert t.num(3, 1) == "3,0"  # the decimals asked for, even when zero
    assert t.num(7.25, 2) == "7,25"
    assert t.num(7.6, 0) == "8"
    assert " " not in t.num(1234.5, 1)  # a plain space would let a line break split a number
    assert "." not in t.num(1234.5, 1)


def test_swedish_and_english_numbers() -> None:
    sv, en = Translator("sv", HEL), Translator("en", HEL)
    assert sv.num(1234.5, 1) == f"1{get_group_symbol('sv')}234,5"
    assert en.num(1234.5, 1) == "1,234.5"
    assert en.num(7.5, 1) == "7.5"
    assert en.num(1234567.25, 2) == "1,234,567.25"


def test_a_rounded_negative_zero_has_no_minus() -> None:
    for lang in LANGS:
        t = Translator(lang, HEL)
        assert t.num(-0.3, 0) == "0"
        assert t.num(-0.04, 1) == t.num(0.0, 1)
        assert t.num(-0.6, 0).endswith("1")
        assert t.num(-0.6, 0) != "1"  # a real negative keeps its sign


def test_dates_by_language() -> None:
    d = date(2026, 12, 4)
    assert Translator("fi", HEL).date(d) == "4.12.2026"  # d.m.yyyy, no leading zeros
    assert Translator("fi", HEL).date(date(2026, 3, 9)) == "9.3.2026"
    assert Translator("sv", HEL).date(d) == "2026-12-04"
    assert Translator("sv", HEL).date(date(2026, 3, 9)) == "2026-03-09"
    en = Translator("en", HEL).date(d)
    assert en == "12/4/26"  # CLDR en short: month first
    assert Translator("fi", HEL).day(d) == "4.12."


def test_times_are_shown_in_the_translators_zone_in_each_languages_format() -> None:
    winter = datetime(2026, 12, 4, 13, 5, tzinfo=UTC)  # Helsinki UTC+2
    summer = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # Helsinki UTC+3
    fi, sv, en = (Translator(lang, HEL) for lang in ("fi", "sv", "en"))
    assert fi.datetime(winter) == "4.12.2026 15.05"  # Finnish clock: a dot between h and min
    assert fi.datetime(summer) == "1.6.2026 15.00"
    assert fi.time(winter) == "15.05"
    assert sv.datetime(winter) == "2026-12-04 15:05"
    assert sv.time(winter) == "15:05"
    assert en.time(winter).replace("\u202f", " ") == "3:05 PM"
    assert en.datetime(winter).replace("\u202f", " ") == "12/4/26, 3:05 PM"
    assert fi.datetime(None) == "—"
    new_york = Translator("fi", ZoneInfo("America/New_York"))
    assert new_york.time(winter) == "8.05"
    assert fi.iso(winter) == "2026-12-04T15:05:00+02:00"


def test_ago_is_in_words_and_never_negative() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    fi = Translator("fi", HEL)
    en = Translator("en", HEL)
    assert "5" in fi.ago(now - timedelta(minutes=5), now)
    assert fi.ago(now - timedelta(minutes=5), now) != en.ago(now - timedelta(minutes=5), now)
    future = fi.ago(now + timedelta(minutes=5), now)
    assert "-" not in future
    assert "5" not in future


# -- readings as people write them ---------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("comparator", ["<", "<=", ">", ">="])
def test_value_text_keeps_the_comparator_and_rounds_a_bound_outward(
    lang: str, comparator: str
) -> None:
    """ "< 2.22" shown as "<2,2" would claim more than the device did: an upper bound is rounded
    up, a lower bound down, by at most one displayed step."""
    t = Translator(parse_lang(lang), HEL)
    decimal = "," if lang in ("fi", "sv") else "."
    upper = comparator.startswith("<")
    for value, ucum, step in (
        (2.2202486678507993, "mmol/L", 0.1),  # a CGM LO: 40 mg/dL
        (22.202486678507995, "mmol/L", 0.1),  # a CGM HI: 400 mg/dL
        (1.11, "mmol/L", 0.1),  # a meter LO: 20 mg/dL
        (600.0, "mg/dL", 1.0),
        (80.0, "L/min", 1.0),
        (59.6, "/min", 1.0),
    ):
        text = value_text(t, value, comparator, ucum)
        assert text.startswith(comparator), text
        number = float(text[len(comparator) :].split()[0].replace(decimal, "."))
        if upper:
            assert value <= number < value + step + 1e-9, text
        else:
            assert value - step - 1e-9 < number <= value, text
    lo = value_text(t, 2.2202486678507993, "<", "mmol/L")
    assert lo.startswith(f"<2{decimal}3"), lo
    hi = value_text(t, 22.202486678507995, ">", "mmol/L")
    assert hi.startswith(f">22{decimal}2"), hi
    # an exact bound stays as it is
    assert value_text(t, 600.0, comparator, "mg/dL").startswith(comparator + "600")


@pytest.mark.parametrize("lang", LANGS)
def test_value_text_never_invents_or_drops_a_value(lang: str) -> None:
    t = Translator(parse_lang(lang), HEL)
    none = value_text(t, None, "<", "mmol/L")
    assert none == "—"
    assert not re.search(r"\d", none)
    assert value_text(t, None, None, None) == "—"
    # zero is a reading, not a missing one
    zero = value_text(t, 0.0, None, "mmol/L")
    assert zero.startswith("0")
    assert zero != "—"
    # units as people write them
    assert value_text(t, 182.0, None, "mm[Hg]").endswith(" mmHg")
    assert value_text(t, 38.5, None, "Cel").endswith(" °C")
    assert value_text(t, 93.0, None, "%") == "93 %"
    # no comparator: nothing is put in front of the number
    assert value_text(t, 5.5, None, "mmol/L")[0].isdigit()
    # a negative rate keeps its sign and its two decimals
    rate = value_text(t, -0.167, None, "mmol/L/min")
    assert rate.startswith("-0")
    assert rate.split()[0].endswith("17")


# -- every key the templates and handlers use exists ---------------------------------------------

#: a translator call's opening: t('key' or t("key" (also viewer.t(...), not format( or get()
_CALL = re.compile(r"(?<![\w])t\(\s*(['\"])((?:(?!\1).)+)\1\s*")


def _calls(source: str) -> list[tuple[str, str, str]]:
    """(key, what follows the key: ')', ',' or '+', the call's remaining arguments)."""
    out = []
    for m in _CALL.finditer(source):
        rest_start = m.end()
        nxt = source[rest_start : rest_start + 1]
        depth, i = 1, rest_start
        while i < len(source) and depth:
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        out.append((m.group(2), nxt, source[rest_start : i - 1]))
    return out


def _sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in [*TEMPLATES, *HANDLERS]}


def _diary_criterion_names() -> set[str]:
    day = date(2026, 3, 2)
    sessions: tuple[tuple[int, Session], ...] = ((7, "morning"), (20, "evening"))
    blows = [
        Blow(
            time=datetime(day.year, day.month, day.day, hour) + timedelta(minutes=k),
            session=session,
            phase="pre",
            pef_l_min=400.0 + k,
        )
        for hour, session in sessions
        for k in range(3)
    ]
    report = analyse_diary(blows, personal_best_l_min=480)
    return {report.diurnal.name, report.bd.name}


def _enumerations() -> dict[str, set[str]]:
    """The values each dynamic key prefix (t('prefix.' + value)) can be completed with, from
    the product's own types."""
    return {
        "priority.": {p.value for p in Priority},
        "state.": {s.value for s in AlertStateName},
        "kind.": set(get_args(AlertOut.model_fields["kind"].annotation)),
        "audience.": {a.value for a in Audience},
        "role.": {r.value for r in Role},
        "patient.threshold_scope.": set(get_args(ThresholdOut.model_fields["scope"].annotation)),
        "pef.criterion.": _diary_criterion_names(),
        "pef.formula.": set(CONVENTIONS),
        # fleet.html asks only for these two link states (any other link is shown as stored)
        "fleet.": {"connected", "disconnected"},
    }


def test_the_templates_and_handlers_were_parsed() -> None:
    names = {p.name for p in TEMPLATES}
    assert {"base.html", "queue.html", "alert.html", "patient.html", "login.html"} <= names
    calls = [c for src in _sources().values() for c in _calls(src)]
    assert len({key for key, _, _ in calls}) > 80


def test_every_literal_key_used_exists_in_the_catalogue() -> None:
    catalog = catalog_keys()
    missing = sorted(
        {
            f"{name}: {key}"
            for name, src in _sources().items()
            for key, nxt, _ in _calls(src)
            if nxt != "+" and key not in catalog
        }
    )
    assert missing == []


def test_every_dynamic_key_prefix_can_be_completed_for_every_value() -> None:
    catalog = catalog_keys()
    enumerations = _enumerations()
    prefixes = {key for src in _sources().values() for key, nxt, _ in _calls(src) if nxt == "+"}
    assert prefixes, "no dynamic keys found: the parser is broken"
    unmapped = sorted(prefixes - set(enumerations))
    assert unmapped == [], f"new dynamic key prefix(es) {unmapped}: add their values here"
    missing = sorted(
        prefix + value
        for prefix in prefixes
        for value in enumerations[prefix]
        if prefix + value not in catalog
    )
    assert missing == []


def test_calls_pass_exactly_the_placeholders_their_text_has() -> None:
    """A text with {n} called without n shows a literal "{n}"; a name the text lacks is lost."""
    catalog = catalog_keys()
    wrong = []
    seen_with_args = 0
    for name, src in _sources().items():
        for key, nxt, rest in _calls(src):
            if nxt == "+" or key not in catalog:
                continue
            passed = set(re.findall(r"(?<![=!<>\w])(\w+)\s*=(?!=)", rest))
            wanted = placeholders(catalog[key][0])
            seen_with_args += bool(passed)
            if passed != wanted:
                wrong.append((name, key, sorted(passed), sorted(wanted)))
    assert wrong == []
    assert seen_with_args >= 2


def test_chart_day_labels_read_unambiguously_in_each_language() -> None:
    day = date(2026, 12, 4)
    assert Translator("fi", HEL).day(day) == "4.12."
    assert Translator("sv", HEL).day(day) == "4/12"
    assert Translator("en", HEL).day(day) == "Dec 4"  # not "4/12": April in US order


def test_no_negative_zero_whatever_the_rounding() -> None:
    for lang in ("fi", "sv", "en"):
        t = Translator(lang, HEL)  # type: ignore[arg-type]
        for value, decimals in ((-0.05, 1), (-0.3, 0), (-0.004, 2), (-0.0, 0), (-0.5, 0)):
            assert not t.num(value, decimals).startswith(("-", "\u2212")), (lang, value)
        assert t.num(-0.06, 1).lstrip("-\u2212") != t.num(-0.06, 1)  # a real -0.1 keeps its sign
