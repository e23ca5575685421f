"""Who is looking at a page, in which language, and the guards on the UI's forms.

Sign-in takes the same tokens as the API (a staff member's, or a service account's from
``REMON_API_TOKENS``) and opens a session kept in the database
(:meth:`CareDirectory.open_session`): the browser's ``HttpOnly``, ``SameSite=Strict`` cookie,
scoped to ``/ui``, holds only a random session id, never the token. Every request asks the
directory again who the session's token belongs to now, so deactivating a staff member or
re-issuing their token ends their sessions at once; signing out deletes the session on the
server, and it expires after :data:`SESSION_MAX_AGE_S` whatever the browser keeps. The table is
shared by every API process, so sessions survive scale-out and restarts. Forms are protected
against cross-site posting twice: the cookie is never sent on a cross-site request, and a POST
whose ``Sec-Fetch-Site`` (or ``Origin``) is not this site is refused before anything is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, Request

from cloud_ingest.api.deps import get_care, get_settings
from cloud_ingest.care import CareDirectory, Principal
from cloud_ingest.settings import IngestSettings
from cloud_ingest.web.i18n import DEFAULT_TZ, Lang, Translator, parse_lang

SESSION_COOKIE: Final = "remon_session"
LANG_COOKIE: Final = "remon_lang"
UI_PREFIX: Final = "/ui"
#: A signed-in session lasts a working shift plus margin; sign in again after it.
SESSION_MAX_AGE_S: Final = 12 * 3600
SESSION_TTL: Final = timedelta(seconds=SESSION_MAX_AGE_S)
_HELSINKI: Final = ZoneInfo(DEFAULT_TZ)


class LoginRequiredError(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CrossSiteError(Exception):
    """A form posted from another site; nothing was done."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person and the words to speak to them in."""

    principal: Principal
    t: Translator

    @property
    def lang(self) -> Lang:
        return self.t.lang

    def in_zone(self, tz: str | None) -> Translator:
        """The same language with times in another zone (a patient's own)."""
        if not tz or tz == self.t.tz.key:
            return self.t
        try:
            return Translator(self.t.lang, ZoneInfo(tz))
        except (KeyError, ValueError):
            return self.t


def request_lang(request: Request) -> Lang:
    return parse_lang(request.cookies.get(LANG_COOKIE))


def translator(request: Request) -> Translator:
    return Translator(request_lang(request), _HELSINKI)


def safe_next(value: str | None) -> str:
    """Where to go after signing in or switching language: a path of this UI only (an open
    redirect to another site would be a phishing aid)."""
    if not value:
        return f"{UI_PREFIX}/queue"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{UI_PREFIX}/"):
        return f"{UI_PREFIX}/queue"
    if "\\" in value or value.startswith("//"):
        return f"{UI_PREFIX}/queue"
    return value


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def get_viewer(
    request: Request,
    settings: Annotated[IngestSettings, Depends(get_settings)],
    care: Annotated[CareDirectory, Depends(get_care)],
) -> Viewer:
    sid = request.cookies.get(SESSION_COOKIE)
    principal = None
    if sid and len(sid) <= 128:
        principal = care.session_principal(sid, settings.api_tokens, now=datetime.now(UTC))
    if principal is None:
        raise LoginRequiredError(_here(request) if request.method == "GET" else "")
    return Viewer(principal=principal, t=translator(request))


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request that another site's page made.

    Browsers that send Fetch Metadata (all current ones) are judged by ``Sec-Fetch-Site`` alone:
    a form posted under ``Referrer-Policy: no-referrer`` carries ``Origin: null`` even from the
    same origin. Older clients are judged by ``Origin`` against ``Host``; a request with neither
    header (curl, scripts with a token) is not a browser's cross-site request.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site not in ("same-origin", "none"):
            raise CrossSiteError(fetch_site)
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
        raise CrossSiteError(origin)


def posting_viewer(request: Request, viewer: Annotated[Viewer, Depends(get_viewer)]) -> Viewer:
    check_same_origin(request)
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
PostingViewerDep = Annotated[Viewer, Depends(posting_viewer)]
