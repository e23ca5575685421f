"""Who is at the kiosk: identification sources that turn what a patient presents into the
pseudonymous patient reference a visit is sent under. Sans-I/O.

:class:`OneTimeCodes` is the typed source: the health station gives the patient a code (with
an appointment, or at the desk); the kiosk takes each code once. A station's codes are loaded
from its configuration; the kiosk never sees names or personal identity codes, only the
pseudonymous reference each code stands for. Typing codes at random is slowed down: after
:data:`MAX_FAILURES` wrong codes in a row the source refuses for :data:`LOCKOUT`.

A card reader on serial would be another source with the same ``identify`` (the card's UID
for the code); its adapter is not built yet.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

#: Wrong codes in a row before the source locks, and for how long.
MAX_FAILURES: Final = 5
LOCKOUT: Final = timedelta(seconds=30)
_CODE: Final = re.compile(r"^[0-9A-Z]{4,16}$")


class IdentificationError(ValueError):
    """The patient could not be identified: ``reason`` is ``invalid`` or ``locked`` (the screen
    says no more than that about a wrong code)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identified:
    patient_ref: str
    method: str  # "code"
    code: str = field(default="", repr=False)  # (never logged)


def normalise_code(text: str) -> str:
    """What the patient typed, as codes are stored: no spaces or dashes, upper case."""
    return re.sub(r"[\s-]", "", text).upper()


def code_digest(code: str) -> str:
    """How a spent code is remembered (its SHA-256; the code itself is not kept)."""
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


class OneTimeCodes:
    """``spent``: digests of codes already used (kept across restarts by the caller, who is
    told of each newly spent one through ``on_spend``)."""

    def __init__(
        self,
        codes: Mapping[str, str],
        *,
        spent: Collection[str] = (),
        on_spend: Callable[[str], None] | None = None,
    ) -> None:
        self._on_spend = on_spend
        self._lock = threading.Lock()
        self._codes: dict[str, str] = {}
        seen: set[str] = set()
        for code, ref in codes.items():
            c = normalise_code(code)
            if not _CODE.match(c):
                raise ValueError(f"kiosk code {code!r}: 4-16 letters or digits")
            if c in seen:  # "AB12-CD" and "ab12cd" are one code: whose would it be?
                raise ValueError(
                    f"kiosk code {code!r} appears twice (spaces, dashes and case aside)"
                )
            seen.add(c)
            if not ref or len(ref) > 128:
                raise ValueError(f"kiosk code {code!r}: the patient reference must be 1-128 chars")
            if code_digest(c) not in spent:
                self._codes[c] = ref
        self._failures = 0
        self._locked_until: datetime | None = None

    def identify(self, typed: str, now: datetime) -> Identified:
        """Who the code stands for; the code stays valid until :meth:`spend` (call it once the
        visit is open, so a visit that could not open does not waste the patient's code)."""
        with self._lock:
            if self._locked_until is not None and now < self._locked_until:
                raise IdentificationError("locked", "too many wrong codes: wait and try again")
            code = normalise_code(typed)
            match = None
            for known in self._codes:  # constant time per comparison; a station has few codes
                if hmac.compare_digest(known.encode(), code.encode()):
                    match = known
            if match is None:
                self._failures += 1
                if self._failures >= MAX_FAILURES:
                    self._failures = 0
                    self._locked_until = now + LOCKOUT
                raise IdentificationError("invalid", "the code is not valid")
            self._failures = 0
            self._locked_until = None
            return Identified(patient_ref=self._codes[match], method="code", code=match)

    def spend(self, identified: Identified) -> None:
        """The visit opened: the code is used up (and remembered as spent)."""
        with self._lock:
            if self._codes.pop(identified.code, None) is not None and self._on_spend is not None:
                self._on_spend(code_digest(identified.code))

    def remaining(self) -> int:
        return len(self._codes)


def load_codes(path: Path) -> dict[str, str]:
    """A station's codes file: a TOML ``[codes]`` table, code = "pseudonymous patient ref"."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"kiosk codes file {path}: {exc}") from exc
    codes = doc.get("codes")
    if not isinstance(codes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in codes.items()
    ):
        raise ValueError(f'kiosk codes file {path}: needs a [codes] table of code = "ref"')
    return codes
