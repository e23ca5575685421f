"""The web UI's words in Finnish (the default), Swedish and English, and locale formatting.

A message is looked up by key; every key has all three languages (a test checks it). Dates and
numbers are formatted with Babel's CLDR data for the chosen language (a patient's readings in
the patient's time zone, everything else in :data:`DEFAULT_TZ`): Finnish "4.12.2026 klo 15.05"
and "7,5", Swedish "2026-12-04 15:05" and "7,5", English "12/4/26, 3:05 PM" and "7.5". Rule
explanations written by the rules engine stay in English (their wording is part of the audit
record); condition titles are translated here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date as Date
from datetime import datetime as DateTime
from datetime import timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_time, format_timedelta
from babel.numbers import format_decimal

Lang = Literal["fi", "sv", "en"]
LANGS: Final[tuple[Lang, ...]] = ("fi", "sv", "en")
DEFAULT_LANG: Final[Lang] = "fi"
LANG_NAMES: Final[dict[Lang, str]] = {"fi": "Suomi", "sv": "Svenska", "en": "English"}
#: Where Finnish care is given: the default time zone for times without a patient's own.
DEFAULT_TZ: Final = "Europe/Helsinki"

# key: (fi, sv, en)
_M: Final[dict[str, tuple[str, str, str]]] = {
    # chrome
    "app.name": ("remon hoitotiimi", "remon vårdteam", "remon care team"),
    "nav.queue": ("Hälytysjono", "Larmkö", "Alert queue"),
    "nav.patients": ("Potilaat", "Patienter", "Patients"),
    "nav.fleet": ("Laitteet", "Enheter", "Fleet"),
    "nav.skip": ("Siirry sisältöön", "Hoppa till innehållet", "Skip to content"),
    "nav.language": ("Kieli", "Språk", "Language"),
    "nav.signed_in_as": ("Kirjautunut", "Inloggad som", "Signed in as"),
    "nav.sign_out": ("Kirjaudu ulos", "Logga ut", "Sign out"),
    "nav.main": ("Päävalikko", "Huvudmeny", "Main menu"),
    # sign-in
    "login.title": ("Kirjaudu sisään", "Logga in", "Sign in"),
    "login.token": ("Käyttötunniste", "Åtkomsttoken", "Access token"),
    "login.token_help": (
        "Henkilökunnan tunniste (demossa tulostettu komentoriville).",
        "Personalens token (i demon skrivs den ut i terminalen).",
        "Your staff token (the demo prints them in the terminal).",
    ),
    "login.submit": ("Kirjaudu", "Logga in", "Sign in"),
    "login.failed": (
        "Tunnistetta ei tunneta tai se on peruttu.",
        "Okänd eller återkallad token.",
        "Unknown or revoked token.",
    ),
    "login.required": (
        "Kirjaudu sisään jatkaaksesi.",
        "Logga in för att fortsätta.",
        "Sign in to continue.",
    ),
    # roles
    "role.clinician": ("kliinikko", "kliniker", "clinician"),
    "role.home_care": ("kotihoito", "hemvård", "home care"),
    "role.admin": ("ylläpitäjä", "administratör", "administrator"),
    # queue
    "queue.title": ("Hälytysjono", "Larmkö", "Alert queue"),
    "queue.filters": ("Rajaa", "Filtrera", "Filter"),
    "queue.team": ("Tiimi", "Team", "Team"),
    "queue.kind": ("Tyyppi", "Typ", "Type"),
    "queue.state": ("Tila", "Status", "State"),
    "queue.priority": ("Kiireellisyys", "Prioritet", "Priority"),
    "queue.all": ("Kaikki", "Alla", "All"),
    "queue.active": ("Avoimet ja kuitatut", "Öppna och kvitterade", "Open and acknowledged"),
    "queue.apply": ("Näytä", "Visa", "Show"),
    "queue.pages": ("Sivut", "Sidor", "Pages"),
    "queue.rows_shown": ("Rivit {first}-{last}", "Rader {first}-{last}", "Rows {first}-{last}"),
    "queue.prev": ("Edelliset", "Föregående", "Previous"),
    "queue.next": ("Seuraavat", "Nästa", "Next"),
    "queue.empty": (
        "Ei hälytyksiä tällä rajauksella.",
        "Inga larm med detta filter.",
        "No alerts match this filter.",
    ),
    "queue.patient": ("Potilas", "Patient", "Patient"),
    "queue.condition": ("Tilanne", "Tillstånd", "Condition"),
    "queue.value": ("Arvo", "Värde", "Value"),
    "queue.age": ("Ikä", "Ålder", "Age"),
    "queue.raised": ("Nostettu", "Larmat", "Raised"),
    "queue.assigned": ("Vastuuhenkilö", "Ansvarig", "Assigned to"),
    "queue.live": ("Päivittyy reaaliajassa", "Uppdateras i realtid", "Updates live"),
    "queue.offline": (
        "Yhteys katkesi: yritetään uudelleen…",
        "Anslutningen bröts: försöker igen…",
        "Connection lost: retrying…",
    ),
    "queue.changed": ("Jono päivittyi", "Kön uppdaterades", "Queue updated"),
    "queue.new_alert": ("Uusi hälytys", "Nytt larm", "New alert"),
    "queue.snoozed_until": ("torkutettu klo", "snoozat till", "snoozed until"),
    "queue.count": ("hälytystä", "larm", "alerts"),
    # priority, states, kinds
    "priority.high": ("Korkea", "Hög", "High"),
    "priority.medium": ("Keskitaso", "Medel", "Medium"),
    "priority.low": ("Matala", "Låg", "Low"),
    "state.open": ("Avoin", "Öppen", "Open"),
    "state.acknowledged": ("Kuitattu", "Kvitterad", "Acknowledged"),
    "state.resolved": ("Ratkaistu", "Löst", "Resolved"),
    "kind.threshold": ("Raja-arvo", "Gränsvärde", "Threshold"),
    "kind.event": ("Laitetapahtuma", "Enhetshändelse", "Device event"),
    "kind.silence": ("Puuttuva tieto", "Saknade data", "Missing data"),
    "kind.reading": ("Mittaus", "Mätning", "Reading"),
    "audience.clinician": ("Kliinikoille", "Till kliniker", "For clinicians"),
    "audience.home_care": ("Kotihoidolle", "Till hemvården", "For home care"),
    # alert detail
    "alert.title": ("Hälytys", "Larm", "Alert"),
    "alert.explanation": ("Selitys", "Förklaring", "Explanation"),
    "alert.rule": ("Sääntö", "Regel", "Rule"),
    "alert.threshold": ("Raja-arvo", "Gränsvärde", "Threshold"),
    "alert.threshold_source": ("Lähde", "Källa", "Source"),
    "alert.first": ("Ensimmäinen arvo", "Första värdet", "First value"),
    "alert.last": ("Viimeisin arvo", "Senaste värdet", "Latest value"),
    "alert.triggers": ("Laukaisuja", "Utlösningar", "Triggers"),
    "alert.cleared": ("Tilanne päättyi", "Tillståndet upphörde", "Condition ended"),
    "alert.evidence": ("Näyttö", "Underlag", "Evidence"),
    "alert.readings": (
        "Mittaukset hälytyksen ajalta",
        "Mätningar under larmet",
        "Readings around the alert",
    ),
    "alert.no_readings": (
        "Ei mittauksia tältä ajalta.",
        "Inga mätningar under perioden.",
        "No readings in this period.",
    ),
    "alert.trail": ("Tapahtumat", "Händelser", "Audit trail"),
    "alert.actions": ("Toimenpiteet", "Åtgärder", "Actions"),
    "alert.note": ("Muistiinpano", "Anteckning", "Note"),
    "alert.note_required": (
        "Muistiinpano (pakollinen)",
        "Anteckning (obligatorisk)",
        "Note (required)",
    ),
    "alert.acknowledge": ("Kuittaa", "Kvittera", "Acknowledge"),
    "alert.assign": ("Anna tehtäväksi", "Tilldela", "Assign"),
    "alert.assignee": ("Vastuuhenkilö", "Ansvarig", "Assignee"),
    "alert.unassigned": ("Ei vastuuhenkilöä", "Ingen ansvarig", "Nobody"),
    "alert.snooze": ("Torkuta", "Snooza", "Snooze"),
    "alert.snooze_minutes": ("Minuuttia", "Minuter", "Minutes"),
    "alert.snooze_help": (
        "Vain kuitatun hälytyksen voi torkuttaa; enintään {max} min tällä kiireellisyydellä.",
        "Endast kvitterade larm kan snoozas; högst {max} min vid denna prioritet.",
        "Only an acknowledged alert can be snoozed; at most {max} min at this priority.",
    ),
    "alert.resolve": ("Ratkaise", "Lös", "Resolve"),
    "alert.done": ("Tallennettu", "Sparat", "Saved"),
    "alert.simulated": (
        "Simuloitu tieto (demo)",
        "Simulerade data (demo)",
        "Simulated data (demo)",
    ),
    "alert.back": ("Takaisin jonoon", "Tillbaka till kön", "Back to the queue"),
    "alert.patient_view": ("Potilaan näkymä", "Patientvy", "Patient view"),
    "alert.escalated": ("Eskaloitu, taso", "Eskalerad, nivå", "Escalated, level"),
    "alert.disclaimer": (
        "Tieto tukee hoitopäätöstä; se ei ole diagnoosi.",
        "Uppgiften stöder vårdbeslut; den är ingen diagnos.",
        "This supports a clinical decision; it is not a diagnosis.",
    ),
    # patients
    "patients.title": ("Potilaat", "Patienter", "Patients"),
    "patients.empty": (
        "Ei potilaita tiimeissäsi.",
        "Inga patienter i dina team.",
        "No patients in your teams.",
    ),
    "patients.open_alerts": ("Avoimia hälytyksiä", "Öppna larm", "Open alerts"),
    "patients.dispenser": ("Lääkeannostelija", "Läkemedelsautomat", "Medication dispenser"),
    "patient.title": ("Potilas", "Patient", "Patient"),
    "patient.latest": ("Viimeisimmät mittaukset", "Senaste mätningar", "Latest readings"),
    "patient.measure": ("Suure", "Storhet", "Measure"),
    "patient.when": ("Aika", "Tid", "When"),
    "patient.device": ("Laite", "Enhet", "Device"),
    "patient.no_readings": ("Ei mittauksia.", "Inga mätningar.", "No readings."),
    "patient.open_alerts": ("Avoimet hälytykset", "Öppna larm", "Open alerts"),
    "patient.no_alerts": ("Ei avoimia hälytyksiä.", "Inga öppna larm.", "No open alerts."),
    "patient.thresholds": ("Hälytysrajat", "Larmgränser", "Alert thresholds"),
    "patient.threshold_scope.patient": ("potilaskohtainen", "patientspecifik", "this patient's"),
    "patient.threshold_scope.team": ("tiimin", "teamets", "the team's"),
    "patient.threshold_scope.default": ("oletus", "standard", "default"),
    "patient.threshold_default": ("Oletus", "Standard", "Default"),
    "patient.threshold_set_by": ("Asettanut", "Satt av", "Set by"),
    "patient.threshold_save": ("Tallenna", "Spara", "Save"),
    "patient.threshold_reset": ("Palauta oletus", "Återställ standard", "Reset to default"),
    "patient.threshold_readonly": (
        "Vain potilaan tiimin kliinikot voivat muuttaa rajoja.",
        "Endast klinikerna i patientens team kan ändra gränserna.",
        "Only clinicians of the patient's team can change thresholds.",
    ),
    "patient.pef": ("PEF-seuranta", "PEF-uppföljning", "PEF diary"),
    "patient.cgm": ("Glukoosi (sensori)", "Glukos (sensor)", "Glucose (CGM)"),
    "patient.bp": ("Kotiverenpaine", "Hemblodtryck", "Home blood pressure"),
    "patient.kiosk": ("Mittauspistekäynnit", "Besök vid mätstationen", "Kiosk visits"),
    "patient.doses": ("Lääkeannokset", "Läkemedelsdoser", "Medication doses"),
    "patient.no_chart": (
        "Ei tietoa tältä jaksolta.",
        "Inga data för perioden.",
        "No data for this period.",
    ),
    "patient.report": ("Tulostettava raportti", "Utskrivbar rapport", "Printable report"),
    "patient.criteria": (
        "PEF-seurannan kriteerit",
        "PEF-uppföljningens kriterier",
        "PEF diary criteria",
    ),
    "pef.criterion.diurnal_variation": (
        "Vuorokausivaihtelu",
        "Dygnsvariation",
        "Diurnal variability",
    ),
    "pef.criterion.bd_response": (
        "Bronkodilataatiovaste",
        "Bronkdilaterande respons",
        "Bronchodilator response",
    ),
    # analytics.pef_diary.CONVENTION_FORMULAS in words
    "pef.formula.finnish": (
        "(suurin - pienin) / suurin",
        "(högsta - lägsta) / högsta",
        "(highest - lowest) / highest",
    ),
    "pef.formula.gina": (
        "(suurin - pienin) / suurimman ja pienimmän keskiarvo",
        "(högsta - lägsta) / medelvärdet av högsta och lägsta",
        "(highest - lowest) / mean(highest, lowest)",
    ),
    "pef.criterion.met": (
        "täyttyy {n} päivänä (vaaditaan ≥ {req}); tukee kliinikon arviota",
        "uppfylls {n} dagar (≥ {req} krävs); stöder klinikerns bedömning",
        "met on {n} days (≥ {req} required); supports the clinician's assessment",
    ),
    "pef.criterion.not_met": (
        "ei täyty: {n}/{req} päivää ({ev} arvioitavissa)",
        "uppfylls inte: {n}/{req} dagar ({ev} bedömbara)",
        "not met: {n} of the required {req} days ({ev} evaluable)",
    ),
    "patient.days": ("vrk", "dygn", "days"),
    "patient.unclassified": (
        "Luokittelemattomia puhalluksia",
        "Oklassificerade blåsningar",
        "Unclassified blows",
    ),
    "patient.visit": ("Käynti", "Besök", "Visit"),
    "visit.readings": ("{n} mittausta", "{n} mätningar", "{n} readings"),
    "visit.bp_result": (
        "Verenpaine, kahden viimeisen keskiarvo",
        "Blodtryck, medelvärdet av de två sista",
        "Blood pressure, mean of the last two",
    ),
    "visit.bp_more": (
        "Kaksi ensimmäistä eroavat ≥ 10 mmHg: mittausohjeen mukaan mitataan vielä kerran.",
        "De två första skiljer sig med ≥ 10 mmHg: enligt anvisningen mäts en gång till.",
        "The first two differ by ≥ 10 mmHg: the protocol asks for one more reading.",
    ),
    "visit.bp_few": (
        "Vain {n} mittausta; mittausohje edellyttää kolmea.",
        "Bara {n} mätningar; anvisningen kräver tre.",
        "Only {n} readings; the protocol asks for three.",
    ),
    "visit.bp_not_computable": (
        "Tulosta ei voi laskea",
        "Resultatet kan inte beräknas",
        "No result can be computed",
    ),
    "visit.answers": ("Kyselyn vastaukset", "Enkätsvar", "Questionnaire answers"),
    "visit.quarantined": (
        "{n} mittausta hylättiin, koska ne eivät kuuluneet tähän käyntiin (ei näytetä).",
        "{n} mätningar avvisades eftersom de inte hörde till besöket (visas inte).",
        "{n} measurements were refused as not this visit's (not shown).",
    ),
    "visit.unbundled": (
        "mittauspisteen lukemat ilman käyntiviestiä",
        "mätstationens värden utan besöksmeddelande",
        "kiosk readings without a visit message",
    ),
    "question.smoker": ("Tupakoi", "Röker", "Smokes"),
    "question.exercise-days-week": (
        "Liikuntapäiviä viikossa",
        "Motionsdagar i veckan",
        "Exercise days a week",
    ),
    "question.feeling": ("Vointi", "Mående", "How they feel"),
    "word.yes": ("kyllä", "ja", "yes"),
    "word.no": ("ei", "nej", "no"),
    "patient.tir": ("Aika tavoitealueella", "Tid inom målområdet", "Time in ranges"),
    "patient.gmi": ("GMI", "GMI", "GMI"),
    "patient.cv": ("Vaihtelu (CV)", "Variation (CV)", "Variability (CV)"),
    "patient.mean": ("Keskiarvo", "Medelvärde", "Mean"),
    "patient.active": ("Sensorin käyttöaika", "Sensorns användningstid", "Sensor wear time"),
    "patient.bp_average": (
        "Mittausjakson keskiarvo",
        "Medelvärde för mätperioden",
        "Protocol average",
    ),
    "patient.bp_days": ("Mittauspäiviä", "Mätdagar", "Measurement days"),
    "patient.bp_above": (
        "Yli kotimittauksen rajan 135/85",
        "Över hemgränsen 135/85",
        "Above the home limit 135/85",
    ),
    "patient.bp_not_above": (
        "Ei yli kotimittauksen rajan 135/85",
        "Inte över hemgränsen 135/85",
        "Not above the home limit 135/85",
    ),
    "patient.doses_summary": (
        "otettu {taken}, myöhässä {late}, väliin jäänyt {missed}",
        "tagna {taken}, sena {late}, missade {missed}",
        "taken {taken}, late {late}, missed {missed}",
    ),
    # fleet
    "fleet.title": ("Laitteet ja kotiyksiköt", "Enheter och hemenheter", "Sites and devices"),
    "fleet.sites": (
        "Kotiyksiköt ja mittauspisteet",
        "Hemenheter och mätstationer",
        "Hubs and kiosks",
    ),
    "fleet.site": ("Yksikkö", "Enhet", "Site"),
    "fleet.state": ("Tila", "Status", "State"),
    "fleet.last_seen": ("Viimeksi nähty", "Senast sedd", "Last seen"),
    "fleet.version": ("Ohjelmistoversio", "Programversion", "Agent version"),
    "fleet.buffer": ("Lähettämättä", "Ej skickade", "Buffered at the edge"),
    "fleet.devices": ("Laitteet", "Enheter", "Devices"),
    "fleet.device": ("Laite", "Enhet", "Device"),
    "fleet.battery": ("Akku", "Batteri", "Battery"),
    "fleet.signal": ("Signaali", "Signal", "Signal"),
    "fleet.link": ("Yhteys", "Anslutning", "Link"),
    "fleet.clock": ("Kellon poikkeama", "Klockavvikelse", "Clock offset"),
    "fleet.firmware": ("Laiteohjelmisto", "Firmware", "Firmware"),
    "fleet.model": ("Malli", "Modell", "Model"),
    "fleet.online": ("yhteydessä", "ansluten", "online"),
    "fleet.offline": ("ei yhteyttä", "frånkopplad", "offline"),
    "fleet.connected": ("yhdistetty", "ansluten", "connected"),
    "fleet.disconnected": ("ei yhdistetty", "frånkopplad", "disconnected"),
    "fleet.unknown": ("ei tiedossa", "okänt", "unknown"),
    "fleet.empty": ("Ei yksiköitä.", "Inga enheter.", "No sites."),
    "fleet.clock_fault": ("yli 15 min", "över 15 min", "over 15 min"),
    "fleet.subjects": ("{n} potilasta", "{n} patienter", "{n} patients"),
    "fleet.latest": ("viimeisin", "senast", "latest"),
    # reports
    "report.pef_title": (
        "PEF-seurantaraportti (2 viikkoa)",
        "PEF-uppföljningsrapport (2 veckor)",
        "PEF diary report (2 weeks)",
    ),
    "report.agp_title": (
        "AGP-raportti (glukoosisensori)",
        "AGP-rapport (glukossensor)",
        "AGP report (CGM)",
    ),
    "report.period": ("Jakso", "Period", "Period"),
    "report.printed": ("Tulostettu", "Utskriven", "Printed"),
    "report.print": ("Tulosta", "Skriv ut", "Print"),
    "report.morning": ("Aamu", "Morgon", "Morning"),
    "report.evening": ("Ilta", "Kväll", "Evening"),
    "report.pre_bd": ("ennen avaavaa", "före bronkdilaterare", "pre-BD"),
    "report.post_bd": ("avaavan jälkeen", "efter bronkdilaterare", "post-BD"),
    "report.variability": ("Vuorokausivaihtelu", "Dygnsvariation", "Diurnal variability"),
    "report.bd_response": ("Avaava vaste", "Bronkdilaterarrespons", "Bronchodilator response"),
    "report.date": ("Päivä", "Dag", "Day"),
    "report.day_count": ("Päiviä", "Dagar", "Days"),
    "report.not_enough": (
        "Tiedot eivät riitä raporttiin.",
        "Data räcker inte för en rapport.",
        "Not enough data for a report.",
    ),
    # errors
    "error.title": ("Virhe", "Fel", "Error"),
    "error.not_found": (
        "Ei löytynyt, tai ei näy tiimeillesi.",
        "Hittades inte, eller syns inte för dina team.",
        "Not found, or not visible to your teams.",
    ),
    "error.forbidden": (
        "Ei oikeutta tähän toimintoon.",
        "Ingen behörighet till denna åtgärd.",
        "You may not do this.",
    ),
    "error.conflict": (
        "Hälytyksen tila on jo muuttunut",
        "Larmets status har redan ändrats",
        "The alert's state has already changed",
    ),
    "error.invalid": ("Tarkista arvo", "Kontrollera värdet", "Check the value"),
    "error.origin": (
        "Lomake lähetettiin toiselta sivustolta; toimintoa ei tehty.",
        "Formuläret skickades från en annan webbplats; inget gjordes.",
        "The form came from another site; nothing was done.",
    ),
    "error.unavailable": (
        "Tietokanta ei vastaa juuri nyt.",
        "Databasen svarar inte just nu.",
        "The database is not answering right now.",
    ),
    # shared words
    # the alert audit trail's actions (rules.engine EventAction, service._ACTION_WORD)
    "action.raised": ("nostettu", "larmat", "raised"),
    "action.updated": ("päivitetty", "uppdaterat", "updated"),
    "action.cleared": ("palautunut", "återställt", "cleared"),
    "action.escalated": ("eskaloitu", "eskalerat", "escalated"),
    "action.acknowledged": ("kuitattu", "kvitterat", "acknowledged"),
    "action.assigned": ("annettu tehtäväksi", "tilldelat", "assigned"),
    "action.snoozed": ("torkutettu", "snoozat", "snoozed"),
    "action.resolved": ("ratkaistu", "löst", "resolved"),
    "word.none": ("—", "—", "—"),
    "word.by": ("tekijä", "av", "by"),
    "word.at": ("klo", "kl.", "at"),
    "word.legend": ("Selite", "Förklaring", "Legend"),
    "word.today": ("tänään", "i dag", "today"),
}

# measure keys (device_profiles.codes) → names clinicians use
_MEASURES: Final[dict[str, tuple[str, str, str]]] = {
    "glucose.capillary": ("Verensokeri (mittari)", "Blodsocker (mätare)", "Blood glucose (meter)"),
    "glucose.cgm": ("Kudossokeri (sensori)", "Vävnadsglukos (sensor)", "Glucose (CGM)"),
    "glucose.cgm.trend": (
        "Sokerin muutosnopeus",
        "Glukosens förändringstakt",
        "Glucose rate of change",
    ),
    "glucose.cgm.predicted": (
        "Ennustettu sokeri 20 min",
        "Förutsagt glukos 20 min",
        "Predicted glucose 20 min",
    ),
    "bp.systolic": ("Systolinen verenpaine", "Systoliskt blodtryck", "Systolic pressure"),
    "bp.diastolic": ("Diastolinen verenpaine", "Diastoliskt blodtryck", "Diastolic pressure"),
    "pulse.cuff": ("Syke (verenpainemittari)", "Puls (blodtrycksmätare)", "Pulse (BP cuff)"),
    "pulse.oximeter": ("Syke (happisaturaatio)", "Puls (oximeter)", "Pulse (oximeter)"),
    "spo2": ("Happisaturaatio", "Syremättnad", "Oxygen saturation"),
    "body.temperature": ("Lämpö", "Kroppstemperatur", "Temperature"),
    "body.weight": ("Paino", "Vikt", "Weight"),
    "body.height": ("Pituus", "Längd", "Height"),
    "bmi": ("Painoindeksi", "Kroppsmasseindex", "Body mass index"),
    "pef": (
        "PEF (uloshengityksen huippuvirtaus)",
        "PEF (maximalt utandningsflöde)",
        "Peak expiratory flow",
    ),
}

# alert conditions → titles (the engine's own title is the English fallback)
_CONDITIONS: Final[dict[str, tuple[str, str, str]]] = {
    "glucose-low-l2": (
        "Sokeri alle tason 2 alarajan",
        "Glukos under nivå 2-gränsen",
        "Glucose below the level 2 low threshold",
    ),
    "glucose-low-l1": (
        "Sokeri alle tason 1 alarajan",
        "Glukos under nivå 1-gränsen",
        "Glucose below the level 1 low threshold",
    ),
    "glucose-high-l2": (
        "Sokeri yli tason 2 ylärajan",
        "Glukos över nivå 2-gränsen",
        "Glucose above the level 2 high threshold",
    ),
    "cgm-urgent-low": (
        "Sensorisokeri kiireellisen hälytyksen tasolla",
        "Sensorglukos på nivån för brådskande larm",
        "CGM glucose at the urgent low level",
    ),
    "cgm-urgent-low-soon": (
        "Sensorisokerin ennustetaan laskevan kiireelliselle tasolle 20 min kuluessa",
        "Sensorglukos väntas nå brådskande låg nivå inom 20 min",
        "CGM glucose predicted to reach the urgent low within 20 min",
    ),
    "cgm-falling-fast": (
        "Sensorisokeri laskee nopeasti",
        "Sensorglukos sjunker snabbt",
        "CGM glucose falling fast",
    ),
    "cgm-low-l1": (
        "Sensorisokeri alle tason 1 alarajan vähintään 15 min",
        "Sensorglukos under nivå 1-gränsen i minst 15 min",
        "CGM glucose below level 1 for at least 15 min",
    ),
    "cgm-stale": (
        "Sensorilta ei tietoa 20 minuuttiin",
        "Inga sensordata på 20 minuter",
        "No CGM data for 20 minutes",
    ),
    "cgm-stale-urgent": (
        "Sensorilta ei tietoa matalan sokerin aikana",
        "Inga sensordata under låg glukos",
        "No CGM data during a low",
    ),
    "bp-systolic-grade3": (
        "Systolinen paine ESH-luokassa 3",
        "Systoliskt tryck i ESH grad 3",
        "Systolic pressure in the ESH grade 3 range",
    ),
    "bp-diastolic-grade3": (
        "Diastolinen paine ESH-luokassa 3",
        "Diastoliskt tryck i ESH grad 3",
        "Diastolic pressure in the ESH grade 3 range",
    ),
    "bp-systolic-low": (
        "Systolinen paine NEWS2-pisteissä 3",
        "Systoliskt tryck i NEWS2 3 poäng",
        "Systolic pressure in the NEWS2 3-point band",
    ),
    "pulse-low": (
        "Syke matala (NEWS2 3 p)",
        "Låg puls (NEWS2 3 p)",
        "Pulse in the NEWS2 3-point low band",
    ),
    "pulse-high": (
        "Syke korkea (NEWS2 3 p)",
        "Hög puls (NEWS2 3 p)",
        "Pulse in the NEWS2 3-point high band",
    ),
    "spo2-low-news2-3": (
        "Happisaturaatio NEWS2-pisteissä 3",
        "Syremättnad i NEWS2 3 poäng",
        "SpO2 in the NEWS2 3-point band",
    ),
    "spo2-low-news2-2": (
        "Happisaturaatio NEWS2-pisteissä 2 (92-93 %)",
        "Syremättnad i NEWS2 2 poäng (92-93 %)",
        "SpO2 in the NEWS2 2-point band (92-93 %)",
    ),
    "temperature-low": (
        "Lämpö matala (NEWS2 3 p)",
        "Låg temperatur (NEWS2 3 p)",
        "Temperature in the NEWS2 3-point low band",
    ),
    "temperature-high": (
        "Kuume (NEWS2 2 p)",
        "Feber (NEWS2 2 p)",
        "Temperature in the NEWS2 2-point high band",
    ),
    "pef-zone-yellow": ("PEF keltaisella alueella", "PEF i gul zon", "PEF in the yellow zone"),
    "pef-zone-red": ("PEF punaisella alueella", "PEF i röd zon", "PEF in the red zone"),
    "pef-session-missed": (
        "PEF-mittaus jäi tekemättä",
        "PEF-mätning uteblev",
        "PEF diary session missed",
    ),
    "dose-missed": ("Lääkeannos jäi ottamatta", "Läkemedelsdos missad", "Dose missed"),
    "dose-taken-late": (
        "Lääkeannos otettu myöhässä",
        "Läkemedelsdos tagen sent",
        "Dose taken late",
    ),
    "low-stock": (
        "Annostelijan lääkkeet vähissä",
        "Automatens läkemedel tar slut",
        "Dispenser stock low",
    ),
    "roll-empty": ("Annostelijan rulla tyhjä", "Automatens rulle tom", "Dispenser roll empty"),
    "device-jam": ("Annostelija jumissa", "Automaten har fastnat", "Dispenser jammed"),
    "dispenser-offline": (
        "Annostelija ei yhteydessä",
        "Automaten är frånkopplad",
        "Dispenser offline",
    ),
    "power-lost": (
        "Annostelijan virta katkennut",
        "Automatens ström bruten",
        "Dispenser power lost",
    ),
    "tamper": ("Annostelijaa on käsitelty", "Automaten har manipulerats", "Dispenser tampered"),
    "help-request": ("Asiakas pyytää apua", "Klienten ber om hjälp", "Client asks for help"),
    "low-battery": ("Akku vähissä", "Låg batterinivå", "Battery low"),
    "device-battery-low": ("Laitteen akku vähissä", "Enhetens batteri lågt", "Device battery low"),
    "device-clock-fault": (
        "Laitteen kello väärässä ajassa",
        "Enhetens klocka går fel",
        "Device clock wrong",
    ),
    "device-sensor-fault": ("Laitteen anturivika", "Sensorfel i enheten", "Device sensor fault"),
    "site-offline": ("Kotiyksikkö ei yhteydessä", "Hemenheten är frånkopplad", "Home hub offline"),
}

_INDEX: Final = {"fi": 0, "sv": 1, "en": 2}


def parse_lang(value: str | None) -> Lang:
    """The language a cookie or query names; anything else is the default (Finnish)."""
    if value == "fi":
        return "fi"
    if value == "sv":
        return "sv"
    if value == "en":
        return "en"
    return DEFAULT_LANG


def catalog_keys() -> Mapping[str, tuple[str, str, str]]:
    """Every message with its three languages (for the completeness test)."""
    return {
        **_M,
        **{f"measure:{k}": v for k, v in _MEASURES.items()},
        **{f"condition:{k}": v for k, v in _CONDITIONS.items()},
    }


_DAY_PATTERN: Final[dict[str, str]] = {"fi": "d.M.", "sv": "d/M", "en": "MMM d"}


@dataclass(frozen=True, slots=True)
class Translator:
    """Words and formats for one request: its language and the time zone times are shown in."""

    lang: Lang
    tz: ZoneInfo

    def __call__(self, key: str, **params: object) -> str:
        text = _M[key][_INDEX[self.lang]]
        return text.format(**params) if params else text

    def text(self, keys: Mapping[str, str]) -> dict[str, str]:
        """Chart labels: ``{label: message key}`` → ``{label: words}``."""
        return {name: self(key) for name, key in keys.items()}

    def measure(self, key: str) -> str:
        names = _MEASURES.get(key)
        return names[_INDEX[self.lang]] if names else key

    def action(self, name: str) -> str:
        """An audit-trail action; one this catalogue does not know is shown as stored."""
        texts = _M.get(f"action.{name}")
        return texts[_INDEX[self.lang]] if texts else name

    def question(self, qid: str) -> str:
        """A kiosk questionnaire question by its id; one this catalogue does not know is shown
        by its id (the station's questionnaire may be newer than this UI)."""
        texts = _M.get(f"question.{qid}")
        return texts[_INDEX[self.lang]] if texts else qid

    def answer(self, value: object) -> str:
        if isinstance(value, bool):
            return self("word.yes" if value else "word.no")
        if isinstance(value, int | float):
            return self.exact(float(value)) if isinstance(value, float) else str(value)
        return str(value)

    def condition(self, key: str, fallback: str) -> str:
        names = _CONDITIONS.get(key)
        return names[_INDEX[self.lang]] if names else fallback

    # -- formats ------------------------------------------------------------------------------

    def num(self, value: float, decimals: int = 1) -> str:
        pattern = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
        text = format_decimal(value, format=pattern, locale=self.lang)
        if not any(c in "123456789" for c in text):
            # -0.3 s shown with no decimals is "0 s", not "-0 s" (judged on the text: Babel
            # rounds half-even on the decimal, not as float round() does)
            text = format_decimal(0, format=pattern, locale=self.lang)
        return text

    def exact(self, value: float, decimals: int = 0) -> str:
        """A number for a form field: at least ``decimals`` decimals and every further one it
        has (up to 6 in all), no grouping, so submitting the field unchanged gives it back."""
        shown = min(max(decimals, 0), 6)
        pattern = "0." + "0" * shown + "#" * (6 - shown)
        if round(value, 6) == 0:
            value = 0.0
        return format_decimal(value, format=pattern, locale=self.lang)

    def datetime(self, at: DateTime | None) -> str:
        if at is None:
            return self("word.none")
        return format_datetime(at, "short", tzinfo=self.tz, locale=self.lang)

    def date(self, day: Date) -> str:
        return format_date(day, "short", locale=self.lang)

    def day(self, day: Date) -> str:
        """A chart axis label: day and month as each language writes it short: "4.12."
        (Finnish), "4/12" (Swedish), "Dec 4" (English, whose numeric dates put the month
        first: "4/12" would read as April)."""
        return format_date(day, _DAY_PATTERN[self.lang], locale=self.lang)

    def time(self, at: DateTime) -> str:
        return format_time(at, "short", tzinfo=self.tz, locale=self.lang)

    def ago(self, at: DateTime, now: DateTime) -> str:
        """How long ago, in words ("5 minuuttia")."""
        return format_timedelta(
            max(now - at, timedelta(0)), threshold=1.5, format="narrow", locale=self.lang
        )

    def iso(self, at: DateTime) -> str:
        """Machine-readable time for <time datetime=...>."""
        return at.astimezone(self.tz).isoformat(timespec="seconds")


UNIT_DISPLAY: Final[dict[str, str]] = {
    "mm[Hg]": "mmHg",
    "Cel": "°C",
    "/min": "/min",
    "kg/m2": "kg/m²",
    "L/min": "l/min",
}


#: Decimals a value is shown with, by unit (what the devices resolve; DOMAIN.md units).
UNIT_DECIMALS: Final[dict[str, int]] = {
    "mmol/L": 1,
    "Cel": 1,
    "kg": 1,
    "kg/m2": 1,
    "cm": 0,
    "mmol/L/min": 2,
    "mg/dL": 0,
}


def value_text(t: Translator, value: float | None, comparator: str | None, ucum: str | None) -> str:
    """A reading as people write it: "7,5 mmol/l"-style number in the viewer's locale, the
    device's comparator kept ("<" for a LO reading), never rounded into another meaning."""
    if value is None:
        return t("word.none")
    decimals = UNIT_DECIMALS.get(ucum or "", 0)
    # A bound is rounded outward, so the text never claims more than the device did: a LO
    # reading "< 2.22 mmol/L" is "<2,3", not "<2,2".
    scale = 10**decimals
    if comparator in ("<", "<="):
        value = math.ceil(round(value * scale, 6)) / scale
    elif comparator in (">", ">="):
        value = math.floor(round(value * scale, 6)) / scale
    return f"{comparator or ''}{t.num(value, decimals)} {unit(ucum)}".strip()


def unit(ucum: str | None) -> str:
    """A UCUM unit as people write it (mm[Hg] → mmHg, Cel → °C)."""
    if ucum is None:
        return ""
    return UNIT_DISPLAY.get(ucum, ucum)
