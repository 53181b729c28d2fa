"""The SOC console (``GET /console/``) in a real browser against two workers on the real broker.

Debian's chromium, headless, driven by Selenium (``browser_harness``; installed by
``scripts/browser.sh install`` where missing and root, else the browser tests are
skipped saying why). The stream freezes two agents on its own (a send of restricted
data to a new address after a normal history); one of them is named
``<img src=x onerror=...>``. An analyst signs in with a token handed over in the
URL fragment, sees the freeze and its trace, tries a release and is refused for the
role (the API's reason shown); a lead signs in by pasting a token and releases with
the verdict ``benign`` (published on agent-verdicts; the benign verdict teaches what
the incident covered, and the agent is on probation). A critical freeze made
in the page waits for a second lead, who releases it with ``confirmed``: the agent
is on probation. An analyst records a verdict on an open alert episode and approves
a held action. Every page is opened on the worker that does not own most agents
(requests are forwarded). Every wait is bounded.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from api_harness import NAME, TOKEN, call, event, exfil, records, wait_for
from browser_harness import NoBrowser, browser_paths, chrome, console_errors
from worker_harness import produce

pytestmark = pytest.mark.timeout(300)

TOKEN_KEY = "flowbreaker.console.token"
WAIT_S = 30.0
HOSTILE = "<img src=x onerror=window.__xss=1>"


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(two_worker_cluster):
    return two_worker_cluster


def _agent_url(cluster, agent: str, i: int = 0) -> str:
    return cluster.url(i) + "/v1/agents/" + quote(agent, safe="")


def _page(cluster) -> str:
    """The console's origin for every page these tests open: one worker, so the tab's session storage (per
    origin) keeps the token from one test to the next. Requests about agents it does not own are forwarded."""
    return cluster.url(1)


def _breaker(cluster, agent: str) -> dict:
    return call("GET", _agent_url(cluster, agent), TOKEN["viewer"]).json["breaker"]


@pytest.fixture(scope="module")
def agents(cluster):
    """Agents of this module: two the stream freezes (one with a hostile id), one for a manual freeze, one
    whose send is held for approval. Seeded with a normal history first."""
    names = {"frozen": cluster.agent_on(0, "console-frz"), "hostile": HOSTILE,
             "manual": cluster.agent_on(1, "console-man"), "held": cluster.agent_on(0, "console-held")}
    # stamped now: the cluster is shared with modules whose events carry the clock's time, and an episode closes
    # once the worker's event-time watermark is 30 min past its last alert (one dated March would close at once)
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=150)

    def now(ev: dict, i: int) -> dict:
        return dict(ev, ts=(t0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"))

    msgs = [(a.encode(), json.dumps(now(event(a, i), i)).encode()) for a in names.values() for i in range(12)]
    produce(cluster.bootstrap, cluster.topic("actions"), msgs)
    for a in names.values():
        wait_for(lambda a=a: call("GET", _agent_url(cluster, a), TOKEN["viewer"]).status == 200, WAIT_S,
                 f"agent {a!r} known")
    produce(cluster.bootstrap, cluster.topic("actions"),
            [(a.encode(), json.dumps(now(exfil(a, 100), 100)).encode()) for a in (names["frozen"], names["hostile"])])
    for a in (names["frozen"], names["hostile"]):
        wait_for(lambda a=a: _breaker(cluster, a)["state"] == "open", WAIT_S, f"the stream froze {a!r}")
    return names


@pytest.fixture(scope="module")
def browser():
    try:
        paths = browser_paths()
    except NoBrowser as err:
        pytest.skip(f"no browser for the console tests: {err}")
    driver = chrome(paths)
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------------- page helpers
def _wait(driver, what: str, check, timeout: float = WAIT_S):
    """Poll ``check(driver)`` until truthy (bounded); fail naming ``what`` with the page's text."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def probe(d):
        try:
            return check(d)
        except (StaleElementReferenceException, LookupError):
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(probe)
    except WebDriverException:
        body = driver.find_element("tag name", "body").text
        raise AssertionError(f"{what}: not within {timeout:.0f} s; the page says:\n{body[:3000]}") from None


def _text(driver, css: str) -> str:
    return driver.find_element("css selector", css).text


def _row_with_link(driver, table_css: str, link_text: str):
    for row in driver.find_elements("css selector", f"{table_css} tbody tr"):
        if any(a.text == link_text for a in row.find_elements("css selector", "a")):
            return row
    raise LookupError(link_text)


def _panel(driver, title: str):
    return driver.find_element("css selector", f'section.panel[aria-label="{title}"]')


def _sign_in_by_pasting(driver, token: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = _wait(driver, "the sign-in form", lambda d: d.find_element("id", "token").is_displayed()
                  and d.find_element("id", "token"))
    field.send_keys(token)
    field.send_keys(Keys.ENTER)


def _signed_in_as(driver, name: str, role: str) -> None:
    _wait(driver, f"signed in as {name}", lambda d: f"Signed in as {name} · role {role}" in _text(d, "#who"))


def _open(driver, cluster, key: str, view: str) -> None:
    """Sign in as ``key`` (a token handed over in the fragment), then open ``view`` (``#/...``)."""
    driver.get(_page(cluster) + "/console/#token=" + TOKEN[key])
    _signed_in_as(driver, NAME[key], "lead" if key.startswith("lead") else key)
    driver.get(_page(cluster) + "/console/" + view)


# ---------------------------------------------------------------------- the page as served
def test_the_console_is_served_with_a_strict_content_security_policy_and_no_inline_code(cluster):
    for path, ctype in (("/console/", "text/html"), ("/console/console.js", "text/javascript"),
                        ("/console/console.css", "text/css")):
        r = call("GET", cluster.url(1) + path)
        assert r.status == 200 and r.headers["Content-Type"].startswith(ctype), (path, r)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    moved = call("GET", cluster.url(0) + "/console", headers={})
    assert moved.status == 200 and b"console.js" in moved.raw  # urllib followed the redirect to /console/

    class Inline(HTMLParser):
        found: list = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "style" or "style" in a or any(k.startswith("on") for k in a):
                self.found.append((tag, a))
            if tag == "script" and not a.get("src"):
                self.found.append((tag, a))
            for k in ("src", "href"):
                if a.get(k) and re.match(r"(https?:)?//", a[k]):
                    self.found.append((tag, a))  # nothing from elsewhere

    page = call("GET", cluster.url(0) + "/console/").raw.decode()
    parser = Inline()
    parser.feed(page)
    assert parser.found == []


def test_whoami_tells_a_token_its_name_role_and_permissions(cluster):
    for key in ("viewer", "analyst", "lead", "runtime"):
        r = call("GET", cluster.url(1) + "/v1/whoami", TOKEN[key])
        assert r.status == 200, r
        assert r.json["name"] == NAME[key]
        assert ("release" in r.json["permissions"]) == (key.startswith("lead"))
        assert ("read" in r.json["permissions"]) == (key != "runtime")
    r = call("GET", cluster.url(0) + "/v1/whoami", "not-a-token")
    assert r.status == 401 and r.json["error"]["code"] == "unauthenticated"


# ---------------------------------------------------------------------- in the browser
def test_an_analyst_sees_the_streams_freeze_with_its_trace_and_is_refused_a_release(cluster, agents, browser):
    from selenium.webdriver.common.keys import Keys

    d = browser
    agent = agents["frozen"]
    d.get(_page(cluster) + "/console/#token=" + TOKEN["analyst"])
    _signed_in_as(d, NAME["analyst"], "analyst")
    # the token left the address bar for the tab's session storage
    assert "token" not in d.current_url and TOKEN["analyst"] not in d.current_url
    assert d.execute_script(f"return sessionStorage.getItem('{TOKEN_KEY}')") == TOKEN["analyst"]
    assert d.execute_script("return document.cookie") == ""

    row = _wait(d, "the frozen agent listed", lambda d: _row_with_link(d, 'section[aria-label="Frozen agents"]', agent))
    cells = [c.text for c in row.find_elements("css selector", "td")]
    assert cells[0] == "critical" and cells[4] == "flowbreaker" and "UTC" in cells[2] and "local" in cells[2]
    iid = _breaker(cluster, agent)["incident_id"]
    incident = row.find_element("link text", iid)
    incident.send_keys(Keys.ENTER)  # keyboard: a focused link, Enter

    _wait(d, "the incident view", lambda d: iid in _text(d, "#view h1"))
    _wait(d, "the trace", lambda d: d.find_elements("css selector", 'section[aria-label="Trace"] tr.trigger'))
    trigger = d.find_element("css selector", 'section[aria-label="Trace"] tr.trigger').text
    assert "trigger" in trigger and "mail.send" in trigger and "email:drop@evil.example" in trigger
    assert "restricted" in trigger and "5,000" in trigger and f"{agent}-e100" in trigger
    reads = [r.text for r in d.find_elements("css selector", 'section[aria-label="Trace"] tbody tr')][1:]
    assert len(reads) == 12 and all("crm.query" in r and "crm://accounts" in r for r in reads)
    why = _panel(d, "Why it was frozen").text
    assert "first time sending to email:drop@evil.example." in why
    attribution = _panel(d, "Attribution").text
    assert "mallory@corp.example" in attribution and "sha256:feedbeef" in attribution
    assert "frozen (open)" in _text(d, 'section[aria-label="Summary"]')

    # the analyst may try; the API refuses for the role and the page shows its one-line reason
    decide = _panel(d, "Decide")
    assert "Releasing needs the role lead" in decide.text
    for v in decide.find_elements("css selector", "input[name=verdict][value=benign]"):
        v.send_keys(Keys.SPACE)
    reason = decide.find_element("css selector", "input[name=reason]")
    reason.send_keys("looks like the nightly export")
    reason.send_keys(Keys.ENTER)
    result = _wait(d, "the refusal", lambda d: "403" in _text(d, 'section[aria-label="Decide"] .result')
                   and _text(d, 'section[aria-label="Decide"] .result'))
    assert result == "403 forbidden: role 'analyst' may not release (allowed: lead)"
    assert _breaker(cluster, agent)["state"] == "open"
    assert console_errors(d) == []


def test_a_lead_pastes_a_token_and_releases_with_a_benign_verdict(cluster, agents, browser):
    from selenium.webdriver.common.keys import Keys

    d = browser
    agent = agents["frozen"]
    iid = _breaker(cluster, agent)["incident_id"]
    _open(d, cluster, "analyst", "#/")
    d.get(_page(cluster) + "/console/#/incident/" + iid)
    _signed_in_as(d, NAME["analyst"], "analyst")  # the tab's session storage kept the analyst's token
    d.find_element("id", "signout").send_keys(Keys.ENTER)
    _wait(d, "signed out", lambda d: d.find_element("id", "login").is_displayed())
    assert d.execute_script(f"return sessionStorage.getItem('{TOKEN_KEY}')") is None
    _sign_in_by_pasting(d, TOKEN["lead"])
    _signed_in_as(d, NAME["lead"], "lead")
    _wait(d, "the incident view", lambda d: iid in _text(d, "#view h1")
          and "frozen (open)" in _text(d, 'section[aria-label="Summary"]'))

    decide = _panel(d, "Decide")
    benign = decide.find_element("css selector", "input[name=verdict][value=benign]")
    benign.send_keys(Keys.SPACE)  # keyboard: a focused radio button, Space
    assert benign.is_selected()
    reason = decide.find_element("css selector", "input[name=reason]")
    reason.send_keys("nightly export to the auditors, confirmed with the owner")
    reason.send_keys(Keys.ENTER)
    result = _wait(d, "the release", lambda d: "Released by" in _text(d, 'section[aria-label="Decide"] .result')
                   and _text(d, 'section[aria-label="Decide"] .result'))
    assert result.startswith(f"Released by {NAME['lead']} with verdict benign: {agent} is released to probation")
    signed = _wait(d, "the verdict on agent-verdicts", lambda d: [
        v for v in records(cluster.bootstrap, cluster.prefix + "agent-verdicts") if v.get("target") == iid])
    assert signed[0]["verdict"] == "benign" and signed[0]["by"] == NAME["lead"] and signed[0]["agent_id"] == agent
    # released to probation; the benign verdict teaches what the incident covered and clears the risk budget,
    # and leaves the probation in place (detector/engine.py, Engine.apply_verdict): the page shows the agent on it
    _wait(d, "the agent on probation", lambda d: "probation (half_open)" in _text(d, 'section[aria-label="Summary"]'))
    assert _breaker(cluster, agent)["state"] == "half_open"
    assert console_errors(d) == []


def test_a_critical_manual_freeze_waits_for_a_second_lead_who_releases_it_to_probation(cluster, agents, browser):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    d = browser
    agent = agents["manual"]
    _open(d, cluster, "lead", "#/agent/" + quote(agent, safe=""))
    decide = _wait(d, "the freeze form", lambda d: _panel(d, "Decide").find_element("css selector", "select"))
    Select(decide).select_by_value("critical")
    reason = _panel(d, "Decide").find_element("css selector", "input[name=reason]")
    reason.send_keys("live exfiltration suspected")
    reason.send_keys(Keys.ENTER)
    _wait(d, "the freeze", lambda d: _breaker(cluster, agent)["state"] == "open")
    _wait(d, "the release form", lambda d: "frozen (open)" in _text(d, 'section[aria-label="Breaker"]')
          and _panel(d, "Decide").find_elements("css selector", "button.danger"))
    iid = _breaker(cluster, agent)["incident_id"]

    def release(verdict: str, why: str) -> None:
        decide = _panel(d, "Decide")
        decide.find_element("css selector", f"input[name=verdict][value={verdict}]").send_keys(Keys.SPACE)
        reason = decide.find_element("css selector", "input[name=reason]")
        reason.send_keys(why)
        reason.send_keys(Keys.ENTER)

    release("confirmed", "contained")
    waiting = _wait(d, "the two-person rule", lambda d: "Waiting for a second lead" in
                    _text(d, 'section[aria-label="Decide"] .result') and _text(d, 'section[aria-label="Decide"] .result'))
    assert waiting.endswith("(403 two_person_rule)")
    assert _breaker(cluster, agent)["state"] == "open"

    # the second lead, in the same tab
    d.find_element("id", "signout").send_keys(Keys.ENTER)
    _sign_in_by_pasting(d, TOKEN["lead2"])
    _signed_in_as(d, NAME["lead2"], "lead")
    _wait(d, "the release form", lambda d: _panel(d, "Decide").find_elements("css selector", "button.danger"))
    release("confirmed", "reviewed: the exports were harmful, contained")
    _wait(d, "the release", lambda d: f"Released by {NAME['lead2']} with verdict confirmed" in
          _text(d, 'section[aria-label="Decide"] .result'))
    _wait(d, "the agent on probation", lambda d: "probation (half_open)" in _text(d, 'section[aria-label="Breaker"]'))
    assert _breaker(cluster, agent)["state"] == "half_open"
    d.get(_page(cluster) + "/console/#/")
    row = _wait(d, "the agent listed on probation",
                lambda d: _row_with_link(d, 'section[aria-label="On probation"]', agent))
    assert NAME["lead2"] in row.text and iid in row.text and "UTC" in row.text
    assert console_errors(d) == []


def test_a_held_action_is_approved_in_the_page(cluster, agents, browser):
    from selenium.webdriver.common.keys import Keys

    d = browser
    agent = agents["held"]
    held = exfil(agent, 50, event_id=f"{agent}-check-1", destinations=["email:partner@audit.example"])
    r = call("POST", cluster.url(0) + "/v1/check", TOKEN["runtime"], held)
    assert r.status == 200 and r.json["verdict"] == "needs_approval", r
    apr = r.json["approval_request_id"]
    _open(d, cluster, "analyst", "#/approvals")
    row = _wait(d, "the pending request", lambda d: d.find_element("css selector", f'tr[data-approval="{apr}"]'))
    assert "email:partner@audit.example" in row.text and "restricted" in row.text and agent in row.text
    sub = d.find_element("css selector", f'tr.sub[data-for="{apr}"]')
    sub.find_element("css selector", "summary").send_keys(Keys.ENTER)  # open the form from the keyboard
    reason = sub.find_element("css selector", "input[name=reason]")
    reason.send_keys("quarterly partner export")
    reason.send_keys(Keys.ENTER)  # the form's first button: Approve
    _wait(d, "the approval", lambda d: f"Approved by {NAME['analyst']}" in sub.find_element("css selector", ".result").text)
    assert call("GET", cluster.url(0) + f"/v1/approvals/{apr}", TOKEN["viewer"]).json["state"] == "approved"


def test_an_analyst_records_a_verdict_on_an_open_alert_episode(cluster, agents, browser):
    from selenium.webdriver.common.keys import Keys

    d = browser
    agent = agents["hostile"]
    _open(d, cluster, "analyst", "#/")
    if "not served by this worker" in _text(d, 'section[aria-label="Open alert episodes"]'):
        pytest.fail("the workers serve /v1/episodes, but the page says they do not")
    ep = _wait(d, "the hostile agent's open episode", lambda d: [
        e for e in call("GET", cluster.url(0) + "/v1/episodes?state=open&agent_id=" + quote(agent, safe=""),
                        TOKEN["viewer"]).json["episodes"]][0])
    eid = ep["episode_id"]
    row = _wait(d, "the episode listed", lambda d: d.find_element("css selector", f'tr[data-episode="{eid}"]'))
    assert row.find_element("css selector", "a").get_attribute("textContent") == agent
    assert ep["incidents"][0] in row.text and "critical" in row.text
    sub = d.find_element("css selector", f'tr.sub[data-for="{eid}"]')
    sub.find_element("css selector", "summary").send_keys(Keys.ENTER)
    sub.find_element("css selector", "input[name=verdict][value=confirmed]").send_keys(Keys.SPACE)
    reason = sub.find_element("css selector", "input[name=reason]")
    reason.send_keys("exfiltration, confirmed with the owner")
    reason.send_keys(Keys.ENTER)
    _wait(d, "the verdict recorded", lambda d: f"Verdict confirmed recorded by {NAME['analyst']} on {eid}" in
          sub.find_element("css selector", ".result").text)
    signed = [v for v in records(cluster.bootstrap, cluster.prefix + "agent-verdicts") if v.get("target") == eid]
    assert signed and signed[0]["verdict"] == "confirmed" and signed[0]["by"] == NAME["analyst"]
    assert console_errors(d) == []


def test_a_hostile_agent_id_is_shown_as_text_and_runs_nothing(cluster, agents, browser):
    d = browser
    _open(d, cluster, "viewer", "#/")
    row = _wait(d, "the hostile agent listed",
                lambda d: _row_with_link(d, 'section[aria-label="Frozen agents"]', HOSTILE))
    link = row.find_element("link text", HOSTILE)
    assert link.get_attribute("textContent") == HOSTILE
    link.click()
    _wait(d, "the hostile agent's page", lambda d: HOSTILE in _text(d, "#view h1")
          and "frozen (open)" in _text(d, 'section[aria-label="Breaker"]'))
    assert call("GET", _agent_url(cluster, HOSTILE), TOKEN["viewer"]).json["manifest"] is None
    _wait(d, "its manifest panel", lambda d: "No intended-use manifest covers this agent." in
          _panel(d, "Intended-use manifest").text)
    assert "No decisions yet." not in _panel(d, "Recent decisions").text
    iid = _breaker(cluster, HOSTILE)["incident_id"]
    d.find_element("link text", iid).click()
    _wait(d, "its incident", lambda d: d.find_elements("css selector", 'section[aria-label="Trace"] tr.trigger'))
    # a viewer is offered no act
    assert "your role (viewer) reads only" in _panel(d, "Decide").text
    assert d.find_elements("css selector", "#view form") == []
    assert d.find_elements("css selector", "img") == []
    assert d.execute_script("return window.__xss") is None
    assert console_errors(d) == []

