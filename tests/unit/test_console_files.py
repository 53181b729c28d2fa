"""The console's static files (streams/api/console/): shipped as package data, served with their headers, and
written so that an API value can only ever become text. The browser tests are in
tests/integration/test_console.py."""
from __future__ import annotations

import asyncio
import re
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

from aiohttp import ClientSession, web

from streams.api import console

REPO = Path(__file__).resolve().parents[2]
JS = resources.files("streams.api.console").joinpath("console.js").read_text()


def test_every_console_file_is_package_data_so_an_installed_flowbreaker_serves_it():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "streams.api.console"]
    for name in console.FILES:
        assert resources.files("streams.api.console").joinpath(name).is_file()
        assert any(fnmatch(name, g) for g in globs), name


def test_the_script_never_turns_a_string_into_html_or_code():
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"on", "javascript:", "srcdoc", "DOMParser", "createContextualFragment"):
        assert sink not in JS, sink
    # timers take functions only, and the one place that builds a link accepts only in-page ones
    assert not re.search(r"set(Timeout|Interval)\(\s*['\"`]", JS)
    assert 'v.startsWith("#/")' in JS


def test_the_script_keeps_the_token_out_of_cookies_and_local_storage():
    assert "document.cookie" not in JS and "localStorage" not in JS
    assert 'credentials: "omit"' in JS and "sessionStorage.setItem" in JS
    assert "history.replaceState" in JS  # a token handed over in the fragment leaves the address bar


def test_console_routes_answer_with_the_security_headers_and_redirect_the_bare_path():
    async def run():
        app = web.Application()
        console.mount(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        out = {}
        try:
            async with ClientSession() as s:
                for path in ("/console/", "/console/console.js", "/console/console.css", "/console"):
                    async with s.get(f"http://127.0.0.1:{port}{path}", allow_redirects=False) as r:
                        out[path] = (r.status, dict(r.headers), await r.read())
                async with s.head(f"http://127.0.0.1:{port}/console/") as r:
                    out["HEAD"] = (r.status, dict(r.headers), b"")
                async with s.get(f"http://127.0.0.1:{port}/console/other.js") as r:
                    out["other"] = (r.status, {}, b"")
        finally:
            await runner.cleanup()
        return out

    out = asyncio.run(run())
    for path, ctype in (("/console/", "text/html"), ("/console/console.js", "text/javascript"),
                        ("/console/console.css", "text/css")):
        status, headers, body = out[path]
        assert status == 200 and headers["Content-Type"].startswith(ctype) and body
        for k, v in console.HEADERS.items():
            assert headers[k] == v, (path, k)
    assert out["/console"][0] == 301 and out["/console"][1]["Location"] == "/console/"
    assert out["/console"][1]["X-Frame-Options"] == "DENY"
    assert out["HEAD"][0] == 200
    assert out["other"][0] == 404


def test_the_policy_allows_nothing_inline_nothing_from_elsewhere_and_no_framing():
    directives = dict(d.strip().split(" ", 1) for d in console.CSP.split(";"))
    assert directives["default-src"] == "'self'"
    for d in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[d] == "'self'", d
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in console.CSP and "*" not in console.CSP and "data:" not in console.CSP
