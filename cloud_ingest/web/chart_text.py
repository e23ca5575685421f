"""The chart words in Finnish and Swedish, next to the English defaults of :mod:`.charts`.

``CHART_TEXT[chart][lang]`` is the ``text`` mapping a chart function of
:mod:`cloud_ingest.web.charts` takes: the same keys as its ``*_TEXT_EN`` dict, and in each
string the same ``{name}`` placeholders (a test checks both). The wording follows Finnish health
care: Finnish clinical terms (PEF "puhallus", "avaava lääke", "vuorokausivaihtelu"; CGM
"tavoitealue") and the Swedish used in Finland ("bronkdilaterare", "dygnsvariation",
"målområde"); flow is written "l/min" in both. Numbers, dates and clock times arrive already
formatted by the caller (decimal comma, "4.12.", "6.00"), so the strings only add "klo" /
"kl." in front of a time. Sentences avoid inflecting a noun after a number where the number
could be 1 ("{days} vrk", "{n} dygn", "Mittauksia {n}").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cloud_ingest.web.charts import (
    AGP_TEXT_EN,
    BP_TEXT_EN,
    DOSE_TEXT_EN,
    PEF_TEXT_EN,
    SPARKLINE_TEXT_EN,
    TIR_TEXT_EN,
)

__all__ = [
    "AGP_TEXT_FI",
    "AGP_TEXT_SV",
    "BP_TEXT_FI",
    "BP_TEXT_SV",
    "CHART_TEXT",
    "DOSE_TEXT_FI",
    "DOSE_TEXT_SV",
    "PEF_TEXT_FI",
    "PEF_TEXT_SV",
    "SPARKLINE_TEXT_FI",
    "SPARKLINE_TEXT_SV",
    "TIR_TEXT_FI",
    "TIR_TEXT_SV",
]

# --------------------------------------------------------------------------- 1. PEF diary

PEF_TEXT_FI: Final[Mapping[str, str]] = {
    "title": "PEF-seuranta: kunkin mittauskerran paras puhallus (l/min)",
    "desc": (
        "Jakso {first}-{last} ({days} vrk), puhalluksia {with_data} päivältä. Parhaiden "
        "puhallusten keskiarvo ennen avaavaa lääkettä: aamulla {am} l/min, illalla {pm} l/min. "
        "Vuorokausivaihtelun kriteeri täyttyi {dv_days} päivänä ja avaavan lääkkeen vasteen "
        "kriteeri {bd_days} päivänä (vaatimus: vähintään {required} päivänä)."
    ),
    "desc_pb": " Henkilökohtainen paras arvo {pb} l/min.",
    "no_data": "Ei PEF-seurantaa tältä jaksolta.",
    "axis_y": "PEF (l/min)",
    "morning_pre": "aamu, ennen avaavaa",
    "evening_pre": "ilta, ennen avaavaa",
    "morning_post": "aamu, avaavan jälkeen",
    "evening_post": "ilta, avaavan jälkeen",
    "pre_line": "arvot ennen avaavaa",
    "personal_best": "henkilökohtainen paras arvo {value}",
    "zone_line": "{percent} % henkilökohtaisesta parhaasta arvosta",
    "legend_diurnal": "vaiht.: vuorokausivaihtelu ≥ {percent} % ja ≥ {l_min} l/min",
    "legend_bd": "vaste: nousu avaavan lääkkeen jälkeen ≥ {percent} % ja ≥ {l_min} l/min",
    "label_diurnal": "vaiht. {value} %",
    "label_bd": "vaste +{value} %",
    "point": "{date} {series}: {value} l/min",
    "none": "-",
}

PEF_TEXT_SV: Final[Mapping[str, str]] = {
    "title": "PEF-uppföljning: bästa blåsningen vid varje mättillfälle (l/min)",
    "desc": (
        "{days} dygn från {first} till {last}, blåsningar under {with_data} dygn. Medelvärde av "
        "de bästa värdena före bronkdilaterare: morgon {am} l/min, kväll {pm} l/min. Kriteriet "
        "för dygnsvariation uppfylldes under {dv_days} dygn och kriteriet för respons på "
        "bronkdilaterare under {bd_days} dygn (krav: minst {required} dygn)."
    ),
    "desc_pb": " Personligt bästa värde {pb} l/min.",
    "no_data": "Ingen PEF-uppföljning för perioden.",
    "axis_y": "PEF (l/min)",
    "morning_pre": "morgon, före bronkdilaterare",
    "evening_pre": "kväll, före bronkdilaterare",
    "morning_post": "morgon, efter bronkdilaterare",
    "evening_post": "kväll, efter bronkdilaterare",
    "pre_line": "värden före bronkdilaterare",
    "personal_best": "personligt bästa värde {value}",
    "zone_line": "{percent} % av personligt bästa värde",
    "legend_diurnal": "var.: dygnsvariation ≥ {percent} % och ≥ {l_min} l/min",
    "legend_bd": "respons: ökning efter bronkdilaterare ≥ {percent} % och ≥ {l_min} l/min",
    "label_diurnal": "var. {value} %",
    "label_bd": "respons +{value} %",
    "point": "{date} {series}: {value} l/min",
    "none": "-",
}

# --------------------------------------------------------------------------- 2. AGP

AGP_TEXT_FI: Final[Mapping[str, str]] = {
    "title": "Ambulatorinen glukoosiprofiili, AGP ({unit})",
    "desc": (
        "Mittaukset ({readings}) on koottu yhden vuorokauden kuvaajaksi {bin} minuutin "
        "jaksoina. Mediaani vaihtelee välillä {min}-{max} {unit}, matalimmillaan klo {t_min} ja "
        "korkeimmillaan klo {t_max}. Tavoitealue {low}-{high} {unit}."
    ),
    "desc_no_median": (
        "Mittaukset ({readings}) on koottu yhden vuorokauden kuvaajaksi {bin} minuutin jaksoina."
    ),
    "desc_days": " Yksittäiset päivät ({n}) näkyvät ohuina viivoina.",
    "no_data": "Ei glukoosiarvoja tältä jaksolta.",
    "axis_y": "Glukoosi ({unit})",
    "band": "persentiilit {low}-{high}",
    "median": "mediaani",
    "target": "tavoitealue {low}-{high} {unit}",
    "day": "yksittäiset päivät",
}

AGP_TEXT_SV: Final[Mapping[str, str]] = {
    "title": "Ambulatorisk glukosprofil, AGP ({unit})",
    "desc": (
        "Mätvärdena ({readings}) är sammanförda till ett dygn i intervall om {bin} min. "
        "Medianen varierar mellan {min} och {max} {unit}, lägst kl. {t_min} och högst "
        "kl. {t_max}. Målområde {low}-{high} {unit}."
    ),
    "desc_no_median": (
        "Mätvärdena ({readings}) är sammanförda till ett dygn i intervall om {bin} min."
    ),
    "desc_days": " Enskilda dygn ({n}) visas som tunna linjer.",
    "no_data": "Inga glukosvärden för perioden.",
    "axis_y": "Glukos ({unit})",
    "band": "percentil {low}-{high}",
    "median": "median",
    "target": "målområde {low}-{high} {unit}",
    "day": "enskilda dygn",
}

# --------------------------------------------------------------------------- 3. TIR bar

TIR_TEXT_FI: Final[Mapping[str, str]] = {
    "title": "Aika eri glukoosialueilla",
    "desc": (
        "Aika tavoitealueella {tir} (tavoite yli {tir_target} %). Alle tavoitealueen {tbr} "
        "(erittäin matala {vl}), yli tavoitealueen {tar} (erittäin korkea {vh}). Mittauksia "
        "{readings} ({days} vrk)."
    ),
    "no_data": "Ei glukoosiarvoja tältä jaksolta.",
    "very_low": "Erittäin matala",
    "low": "Matala",
    "in_range": "Tavoitealueella",
    "high": "Korkea",
    "very_high": "Erittäin korkea",
    "range_below": "< {value} {unit}",
    "range_between": "{low}-{high} {unit}",
    "range_above": "> {value} {unit}",
    "percent": "{value} %",
    "percent_below": "< {value} %",
    "percent_above": "> {value} %",
    "target_below": "tavoite < {value} %",
    "target_above": "tavoite > {value} %",
    "below_total": "Alle tavoitealueen (matala ja erittäin matala): {value}, tavoite < {target} %",
    "above_total": "Yli tavoitealueen (korkea ja erittäin korkea): {value}, tavoite < {target} %",
}

TIR_TEXT_SV: Final[Mapping[str, str]] = {
    "title": "Tid inom glukosintervallen",
    "desc": (
        "Tid inom målområdet {tir} (mål över {tir_target} %). Under målområdet {tbr} "
        "(mycket låg {vl}), över målområdet {tar} (mycket hög {vh}). Antal mätvärden "
        "{readings} under {days} dygn."
    ),
    "no_data": "Inga glukosvärden för perioden.",
    "very_low": "Mycket låg",
    "low": "Låg",
    "in_range": "Inom målområdet",
    "high": "Hög",
    "very_high": "Mycket hög",
    "range_below": "< {value} {unit}",
    "range_between": "{low}-{high} {unit}",
    "range_above": "> {value} {unit}",
    "percent": "{value} %",
    "percent_below": "< {value} %",
    "percent_above": "> {value} %",
    "target_below": "mål < {value} %",
    "target_above": "mål > {value} %",
    "below_total": "Under målområdet (låg och mycket låg): {value}, mål < {target} %",
    "above_total": "Över målområdet (hög och mycket hög): {value}, mål < {target} %",
}

# --------------------------------------------------------------------------- 4. home BP

BP_TEXT_FI: Final[Mapping[str, str]] = {
    "title": "Verenpaine (mmHg)",
    "desc": (
        "Mittauksia {n} ajalla {first}-{last}: systolinen {sys_min}-{sys_max} mmHg, "
        "diastolinen {dia_min}-{dia_max} mmHg. Kotimittauksen raja {thr_sys}/{thr_dia} mmHg."
    ),
    "desc_average": " Mittausjakson keskiarvo {sys}/{dia} mmHg ({used} mittauksesta), {status}.",
    "status_above": "rajalla tai sen yli",
    "status_below": "alle rajan",
    "no_data": "Ei verenpainemittauksia tältä jaksolta.",
    "axis_y": "mmHg",
    "systolic": "systolinen",
    "diastolic": "diastolinen",
    "threshold": "kotimittauksen raja {sys}/{dia}",
    "threshold_line": "raja {value}",
    "average": "mittausjakson keskiarvo {sys}/{dia}",
    "average_line": "keskiarvo {value}",
    "discarded": "1. päivä (ei keskiarvossa)",
    "point": "{date} klo {time} {series}: {value} mmHg",
}

BP_TEXT_SV: Final[Mapping[str, str]] = {
    "title": "Blodtryck (mmHg)",
    "desc": (
        "Antal mätningar {n} under perioden {first}-{last}: systoliskt {sys_min}-{sys_max} "
        "mmHg, diastoliskt {dia_min}-{dia_max} mmHg. Hemgräns {thr_sys}/{thr_dia} mmHg."
    ),
    "desc_average": (
        " Medelvärde för mätperioden {sys}/{dia} mmHg (antal mätningar {used}), {status}."
    ),
    "status_above": "på eller över gränsen",
    "status_below": "under gränsen",
    "no_data": "Inga blodtrycksmätningar för perioden.",
    "axis_y": "mmHg",
    "systolic": "systoliskt",
    "diastolic": "diastoliskt",
    "threshold": "hemgräns {sys}/{dia}",
    "threshold_line": "gräns {value}",
    "average": "medelvärde för mätperioden {sys}/{dia}",
    "average_line": "medelvärde {value}",
    "discarded": "dag 1 (ej medräknad)",
    "point": "{date} kl. {time} {series}: {value} mmHg",
}

# --------------------------------------------------------------------------- 5. doses

DOSE_TEXT_FI: Final[Mapping[str, str]] = {
    "title": "Lääkeannokset",
    "desc": (
        "Jakso {first}-{last} ({days} vrk): otettu {taken}, otettu myöhässä {late}, jäi "
        "ottamatta {missed}, tulossa {due}."
    ),
    "no_data": "Ei aikataulutettuja lääkeannoksia tältä jaksolta.",
    "taken": "otettu",
    "late": "otettu myöhässä",
    "missed": "jäi ottamatta",
    "due": "tulossa",
    "legend": "{status} ({count})",
    "point": "{date} klo {time}: {status}",
    "point_at": "{date} klo {time}: {status} klo {at}",
}

DOSE_TEXT_SV: Final[Mapping[str, str]] = {
    "title": "Läkemedelsdoser",
    "desc": (
        "{days} dygn från {first} till {last}: tagna {taken}, tagna sent {late}, missade "
        "{missed}, kommande {due}."
    ),
    "no_data": "Inga schemalagda doser för perioden.",
    "taken": "tagen",
    "late": "tagen sent",
    "missed": "missad",
    "due": "kommande",
    "legend": "{status} ({count})",
    "point": "{date} kl. {time}: {status}",
    "point_at": "{date} kl. {time}: {status} kl. {at}",
}

# --------------------------------------------------------------------------- 6. sparkline

SPARKLINE_TEXT_FI: Final[Mapping[str, str]] = {
    "title": "Viimeisimmät mittaukset",
    "desc": (
        "Mittauksia {n} ajalla {first}-{last}; viimeisin {latest}{unit}, vaihteluväli "
        "{min}-{max}{unit}."
    ),
    "no_data": "Ei mittauksia.",
}

SPARKLINE_TEXT_SV: Final[Mapping[str, str]] = {
    "title": "Senaste mätningar",
    "desc": (
        "Antal mätningar {n} under perioden {first}-{last}; senaste {latest}{unit}, "
        "variationsbredd {min}-{max}{unit}."
    ),
    "no_data": "Inga mätningar.",
}

#: ``CHART_TEXT[chart][lang]``: the ``text`` argument of each chart function, by language.
CHART_TEXT: Final[dict[str, dict[str, Mapping[str, str]]]] = {
    "pef": {"fi": PEF_TEXT_FI, "sv": PEF_TEXT_SV, "en": PEF_TEXT_EN},
    "agp": {"fi": AGP_TEXT_FI, "sv": AGP_TEXT_SV, "en": AGP_TEXT_EN},
    "tir": {"fi": TIR_TEXT_FI, "sv": TIR_TEXT_SV, "en": TIR_TEXT_EN},
    "bp": {"fi": BP_TEXT_FI, "sv": BP_TEXT_SV, "en": BP_TEXT_EN},
    "dose": {"fi": DOSE_TEXT_FI, "sv": DOSE_TEXT_SV, "en": DOSE_TEXT_EN},
    "sparkline": {"fi": SPARKLINE_TEXT_FI, "sv": SPARKLINE_TEXT_SV, "en": SPARKLINE_TEXT_EN},
}
