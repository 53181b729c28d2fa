"""The README's screenshot of the console's incident view (docs/img/console-incident.png), taken for real.

    python scripts/console_screenshot.py [--bootstrap HOST:PORT] [--out docs/img/console-incident.png]

One ``flowbreaker worker`` (``examples/policy.toml``, the API test tokens of
``tests/integration/api_harness.py``) on the ``--bootstrap`` broker, or on a broker of
its own started with scripts/kafka.sh and stopped at the end. An HR agent works
normally for an hour of event time (lookups, ticket updates, a few internal
mails), then in the night reads the personnel file in bulk and mails it to a
never-seen outside address: the stream freezes it. Headless chromium
(``scripts/browser.sh install``), 1280 px wide, local time zone Europe/Berlin,
signs in as a lead with a token in the fragment, opens the incident and saves the
page. Everything it started is stopped, by its own pid.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO)]

AGENT = "hr-agent-003"


def history(agent: str) -> list[dict]:
    """An hour of ordinary work, then the night's bulk read and the send that trips the breaker."""
    base = dict(agent_id=agent, operator_id="people-ops", sensitivity="internal", records=1)
    work = [("hr.lookup_employee", "read", "hr://personnel/{}", "confidential", 1, []),
            ("tickets.update", "write", "tickets://helpdesk/HR-{}", "internal", 1, []),
            ("hr.lookup_employee", "read", "hr://personnel/{}", "confidential", 1, []),
            ("mail.send", "send", "mail://outbox", "internal", 1, ["email:people-team@corp.example"])]
    events = []
    for i in range(48):
        tool, action, resource, sens, records, dests = work[i % len(work)]
        events.append(dict(base, event_id=f"{agent}-{i:04d}", ts=f"2026-11-17T14:{i:02d}:10Z", tool=tool,
                           action=action, resource=resource.format(4100 + i), sensitivity=sens, records=records,
                           destinations=dests, task_id=f"{agent}-t{i // 4}"))
    night = dict(base, task_id=f"{agent}-t-night", requested_by="unknown-caller@contractor.example",
                 instruction_hash="sha256:9c1e77a0d4")
    events.append(dict(night, event_id=f"{agent}-0100", ts="2026-11-18T02:41:05Z", tool="hr.export",
                       action="read", resource="hr://personnel/*", sensitivity="restricted", records=2400))
    events.append(dict(night, event_id=f"{agent}-0101", ts="2026-11-18T02:41:37Z", tool="files.zip",
                       action="write", resource="file:///tmp/staff.zip", sensitivity="restricted", records=2400,
                       parent_event_id=f"{agent}-0100"))
    events.append(dict(night, event_id=f"{agent}-0102", ts="2026-11-18T02:42:02Z", tool="mail.send",
                       action="send", resource="file:///tmp/staff.zip", sensitivity="restricted", records=2400,
                       bytes=48_000_000, destinations=["email:archive-7731@mailbox.example"],
                       parent_event_id=f"{agent}-0101"))
    return events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", help="a running broker (default: start one with scripts/kafka.sh)")
    p.add_argument("--out", default=str(REPO / "docs" / "img" / "console-incident.png"))
    p.add_argument("--overview", help="also save the overview (frozen agents, episodes, approvals) here")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1500)
    args = p.parse_args(argv)

    from api_harness import TOKEN, Cluster, call, wait_for
    from bench.harness import broker
    from browser_harness import NoBrowser, browser_paths, chrome
    from worker_harness import produce

    try:
        paths = browser_paths()
    except NoBrowser as err:
        print(f"console_screenshot: {err}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="fb-console-shot-") as tmp, broker(args.bootstrap, Path(tmp),
                                                                              19700) as bootstrap:
        cluster = Cluster(bootstrap, f"shot-{int(time.time())}-", Path(tmp), n=1)
        try:
            cluster.start()
            agent_url = cluster.url(0) + "/v1/agents/" + quote(AGENT, safe="")
            produce(bootstrap, cluster.topic("actions"),
                    [(AGENT.encode(), json.dumps(e).encode()) for e in history(AGENT)])
            br = wait_for(lambda: call("GET", agent_url, TOKEN["viewer"]).json["breaker"]
                          if call("GET", agent_url, TOKEN["viewer"]).status == 200 else None, 60, "the agent known")
            br = wait_for(lambda: (lambda b: b if b["state"] == "open" else None)(
                call("GET", agent_url, TOKEN["viewer"]).json["breaker"]), 60, "the freeze")
            driver = chrome(paths, width=args.width, height=args.height, tz="Europe/Berlin")
            try:
                driver.get(cluster.url(0) + "/console/#token=" + TOKEN["lead"])
                wait_for(lambda: "role lead" in driver.find_element("id", "who").text, 30, "signed in")
                driver.get(cluster.url(0) + "/console/#/incident/" + br["incident_id"])
                wait_for(lambda: driver.find_elements("css selector", 'section[aria-label="Trace"] tr.trigger'), 30,
                         "the incident's trace")
                driver.execute_script("document.activeElement.blur()")
                time.sleep(0.5)  # the page has rendered; let fonts settle before the shot
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
                if args.overview:
                    driver.get(cluster.url(0) + "/console/#/")
                    wait_for(lambda: driver.find_elements("css selector", "tr[data-episode]"), 30, "the episodes")
                    driver.execute_script("document.activeElement.blur()")
                    driver.save_screenshot(args.overview)
            finally:
                driver.quit()
        finally:
            cluster.stop()
    print(f"console_screenshot: {args.out} (incident {br['incident_id']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
