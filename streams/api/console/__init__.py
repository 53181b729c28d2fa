"""The SOC's triage console: one page served by every worker at ``GET /console/`` (issue 22).

Three static files of this package (package data, so an installed flowbreaker has
them): ``index.html``, ``console.js`` and ``console.css``. No build step, no
framework, nothing fetched from elsewhere: the page talks only to the documented
``/v1`` API of the worker that served it (``docs/api.md``), with a bearer token the
user pastes (or hands over once in the URL fragment, ``/console/#token=...``, which
the page moves to the tab's session storage and removes from the address bar; a
fragment never reaches the server). What the page offers follows the token's
role (``GET /v1/whoami``); the API decides, and every refusal is shown as its
one-line reason.

The files hold no data and need no token. Every answer carries a strict
Content-Security-Policy (:data:`CSP`: only this origin's script, style and
connections, no inline script or style, no frames, no forms posted elsewhere),
``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``. The page renders every API value as text
(``textContent``), never as HTML: agent ids, destinations and reasons come from
agents and may be hostile.

>>> sorted(FILES)
['console.css', 'console.js', 'index.html']
>>> "default-src 'self'" in CSP and "'unsafe-inline'" not in CSP
True
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["mount", "CSP", "HEADERS", "FILES"]

#: what the page may load and where it may connect: this origin only, no inline code, no framing
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: file name -> content type
FILES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
         "console.css": "text/css; charset=utf-8"}


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def mount(web_app: Any) -> None:
    """Add ``GET /console`` (a redirect), ``/console/`` and its two assets to an aiohttp application.

    The files are read once here: a worker serves the console it was started with."""
    from aiohttp import web

    bodies = {name: _read(name) for name in FILES}

    def page(name: str):
        body, ctype = bodies[name], FILES[name]

        async def handler(_request: web.Request) -> web.Response:
            resp = web.Response(body=body, headers=HEADERS)
            resp.headers["Content-Type"] = ctype
            return resp

        return handler

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/console/", headers=HEADERS)

    web_app.router.add_get("/console", redirect)
    web_app.router.add_get("/console/", page("index.html"))
    for name in ("console.js", "console.css"):
        web_app.router.add_get(f"/console/{name}", page(name))
