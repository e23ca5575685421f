"""The kiosk screen's words in Finnish (default), Swedish and English. Plain language, short
sentences: the screen talks to a patient standing at a lobby station, not to staff."""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["fi", "sv", "en"]
LANGS: Final[tuple[Lang, ...]] = ("fi", "sv", "en")
LANG_NAMES: Final = {"fi": "Suomi", "sv": "Svenska", "en": "English"}
_I: Final = {"fi": 0, "sv": 1, "en": 2}

W: Final[dict[str, tuple[str, str, str]]] = {
    "title": ("Omamittauspiste", "Egenmätningsstation", "Self-measurement station"),
    "skip": ("Siirry sisältöön", "Till innehållet", "Skip to content"),
    "idle.heading": ("Tervetuloa", "Välkommen", "Welcome"),
    "idle.lead": (
        "Kirjoita saamasi koodi, niin mittaustulokset menevät omalle terveysasemallesi.",
        "Skriv in koden du fått, så går mätresultaten till din egen hälsostation.",
        "Type the code you were given, and your results go to your own health station.",
    ),
    "idle.code": ("Koodi", "Kod", "Code"),
    "idle.submit": ("Jatka", "Fortsätt", "Continue"),
    "idle.done": (
        "Kiitos! Tulokset lähetettiin terveysasemallesi. Laitteen muisti on tyhjennetty.",
        "Tack! Resultaten skickades till din hälsostation. Stationens minne är tömt.",
        "Thank you! Your results were sent to your health station. The station's memory is clear.",
    ),
    "idle.queued": (
        "Kiitos! Tulokset on tallennettu ja ne lähtevät terveysasemallesi heti, kun yhteys toimii.",
        "Tack! Resultaten är sparade och skickas till din hälsostation när förbindelsen fungerar.",
        "Thank you! Your results are saved and go to your health station as soon as the "
        "connection works.",
    ),
    "idle.wiped": (
        "Käynti päättyi, eikä mitään lähetetty. Tiedot poistettiin.",
        "Besöket avslutades och inget skickades. Uppgifterna raderades.",
        "The visit ended and nothing was sent. The data was deleted.",
    ),
    "identified.heading": ("Tunnistettu", "Identifierad", "Identified"),
    "identified.lead": (
        "Mittaat ensin pituuden ja painon, sitten verenpaineen, happikyllästyksen ja lämmön. "
        "Voit katsoa tulokset ennen kuin lähetät ne.",
        "Du mäter först längd och vikt, sedan blodtryck, syremättnad och temperatur. "
        "Du ser resultaten innan du skickar dem.",
        "You measure height and weight first, then blood pressure, oxygen saturation and "
        "temperature. You see the results before you send them.",
    ),
    "identified.start": ("Aloita mittaukset", "Börja mäta", "Start measuring"),
    "measuring.heading": ("Mittaukset", "Mätningar", "Measuring"),
    "measuring.lead": (
        "Tee mittaukset alla olevien ohjeiden mukaan. Tulokset tulevat näkyviin tähän.",
        "Gör mätningarna enligt anvisningarna nedan. Resultaten visas här.",
        "Follow the instructions below. Your results appear here.",
    ),
    "measuring.none": ("Ei vielä tuloksia.", "Inga resultat ännu.", "No results yet."),
    "measuring.done": ("Valmis: katso tulokset", "Klar: se resultaten", "Done: see the results"),
    "review.heading": ("Tuloksesi", "Dina resultat", "Your results"),
    "review.lead": (
        "Tarkista tulokset. Voit mitata uudelleen tai lähettää ne terveysasemallesi.",
        "Kontrollera resultaten. Du kan mäta igen eller skicka dem till din hälsostation.",
        "Check your results. You can measure again or send them to your health station.",
    ),
    "review.repeat": ("Mittaa uudelleen", "Mät igen", "Measure again"),
    "review.questions": ("Terveyskysely", "Hälsoenkät", "Health questions"),
    "review.consent": (
        "Lähetä tulokset terveysasemalleni",
        "Skicka resultaten till min hälsostation",
        "Send the results to my health station",
    ),
    "review.consent_note": (
        "Tulokset ja vastaukset lähetetään terveysasemallesi, ja ne poistetaan tästä laitteesta.",
        "Resultaten och svaren skickas till din hälsostation och raderas från stationen.",
        "Your results and answers go to your health station and are deleted from this station.",
    ),
    "review.no_results": (
        "Ei lähetettäviä tuloksia: mittaa ensin.",
        "Inga resultat att skicka: mät först.",
        "No results to send: measure first.",
    ),
    "sending.heading": ("Lähetetään…", "Skickar…", "Sending…"),
    "sending.lead": (
        "Tulokset lähetetään. Tämä kestää hetken.",
        "Resultaten skickas. Det tar en stund.",
        "Your results are being sent. This takes a moment.",
    ),
    "bp.progress": (
        "Verenpainemittauksia {taken}/{wanted}",
        "Blodtrycksmätningar {taken}/{wanted}",
        "Blood pressure readings {taken}/{wanted}",
    ),
    "bp.more": (
        "Kaksi ensimmäistä mittausta eroavat vähintään 10 mmHg. Mittaa vielä kerran.",
        "De två första mätningarna skiljer sig med minst 10 mmHg. Mät en gång till.",
        "Your first two readings differ by 10 mmHg or more. Measure once more.",
    ),
    "bp.next": (
        "Odota 1-2 minuuttia ja mittaa uudelleen.",
        "Vänta 1-2 minuter och mät igen.",
        "Wait 1-2 minutes and measure again.",
    ),
    "bp.result": (
        "Verenpaineesi (kahden viimeisen mittauksen keskiarvo): {value} mmHg",
        "Ditt blodtryck (medelvärdet av de två sista): {value} mmHg",
        "Your blood pressure (mean of the last two readings): {value} mmHg",
    ),
    "cancel": ("Keskeytä ja poista tiedot", "Avbryt och radera", "Stop and delete"),
    "warn": (
        "Käynti päättyy klo {time}, jos et jatka.",
        "Besöket avslutas kl. {time} om du inte fortsätter.",
        "The visit ends at {time} unless you go on.",
    ),
    "warn.go_on": ("Jatka", "Fortsätt", "Go on"),
    "yes": ("Kyllä", "Ja", "Yes"),
    "no": ("Ei", "Nej", "No"),
    "save": ("Tallenna vastaukset", "Spara svaren", "Save the answers"),
    "error": ("Virhe", "Fel", "Error"),
    "error.invalid": ("Koodi ei ole voimassa.", "Koden är inte giltig.", "The code is not valid."),
    "error.locked": (
        "Liian monta väärää koodia. Odota hetki ja yritä uudelleen.",
        "För många fel koder. Vänta en stund och försök igen.",
        "Too many wrong codes. Wait a moment and try again.",
    ),
    "error.step": (
        "Tätä ei voi tehdä juuri nyt. Jatka näytön ohjeiden mukaan.",
        "Det går inte just nu. Fortsätt enligt anvisningarna på skärmen.",
        "That is not possible just now. Go on as the screen shows.",
    ),
    "error.origin": (
        "Pyyntö ei tullut tältä näytöltä.",
        "Begäran kom inte från den här skärmen.",
        "The request did not come from this screen.",
    ),
    "device.bp": ("Verenpainemittari", "Blodtrycksmätare", "Blood pressure monitor"),
    "device.scale": ("Vaaka", "Våg", "Scale"),
    "device.height": ("Pituusmittari", "Längdmätare", "Height meter"),
    "device.oximeter": ("Happisaturaatiomittari", "Syremättnadsmätare", "Pulse oximeter"),
    "device.thermometer": ("Kuumemittari", "Termometer", "Thermometer"),
    "guide.bp": (
        "Istu rauhassa 5 minuuttia selkä tuettuna ja jalat lattialla. Pane mansetti "
        "olkavarteen sydämen korkeudelle. Mittaa kolme kertaa 1-2 minuutin välein; älä puhu.",
        "Sitt stilla i 5 minuter med ryggstöd och fötterna i golvet. Sätt manschetten på "
        "överarmen i hjärthöjd. Mät tre gånger med 1-2 minuters mellanrum; prata inte.",
        "Sit quietly for 5 minutes, back supported, feet on the floor. Put the cuff on your upper "
        "arm at heart level. Measure three times, 1-2 minutes apart; do not talk.",
    ),
    "guide.scale": (
        "Riisu kengät ja astu vaa'alle. Seiso paikallaan, kunnes tulos näkyy.",
        "Ta av skorna och ställ dig på vågen. Stå stilla tills resultatet visas.",
        "Take off your shoes and step on the scale. Stand still until the result shows.",
    ),
    "guide.height": (
        "Seiso selkä mittaria vasten ilman kenkiä, katse suoraan eteenpäin.",
        "Stå med ryggen mot mätaren utan skor och titta rakt fram.",
        "Stand with your back to the meter, without shoes, looking straight ahead.",
    ),
    "guide.oximeter": (
        "Pane sormi mittarin sisään ja pidä käsi paikallaan, kunnes tulos näkyy.",
        "Sätt fingret i mätaren och håll handen stilla tills resultatet visas.",
        "Put a finger in the meter and keep your hand still until the result shows.",
    ),
    "guide.thermometer": (
        "Mittaa lämpö otsalta mittarin ohjeen mukaan.",
        "Mät temperaturen på pannan enligt termometerns anvisning.",
        "Take your temperature on the forehead as the thermometer shows.",
    ),
    "m.bp.systolic": ("Yläpaine", "Övertryck", "Systolic"),
    "m.bp.diastolic": ("Alapaine", "Undertryck", "Diastolic"),
    "m.pulse.cuff": ("Syke", "Puls", "Pulse"),
    "m.pulse.oximeter": ("Syke", "Puls", "Pulse"),
    "m.spo2": ("Happisaturaatio", "Syremättnad", "Oxygen saturation"),
    "m.body.temperature": ("Lämpö", "Temperatur", "Temperature"),
    "m.body.weight": ("Paino", "Vikt", "Weight"),
    "m.body.height": ("Pituus", "Längd", "Height"),
    "m.bmi": ("Painoindeksi", "Kroppsmasseindex", "Body mass index"),
    "q.smoker": ("Tupakoitko?", "Röker du?", "Do you smoke?"),
    "q.exercise-days-week": (
        "Monena päivänä viikossa liikut vähintään 30 minuuttia?",
        "Hur många dagar i veckan motionerar du minst 30 minuter?",
        "On how many days a week do you exercise for at least 30 minutes?",
    ),
    "q.feeling": ("Millainen vointisi on?", "Hur mår du?", "How do you feel?"),
    "a.good": ("Hyvä", "Bra", "Good"),
    "a.fair": ("Kohtalainen", "Ganska bra", "Fair"),
    "a.poor": ("Huono", "Dålig", "Poor"),
}


def word(lang: Lang, key: str, **params: object) -> str:
    texts = W.get(key)
    if texts is None:
        return key
    text = texts[_I[lang]]
    return text.format(**params) if params else text


def parse_lang(value: str | None) -> Lang:
    for lang in LANGS:
        if value == lang:
            return lang
    return "fi"
