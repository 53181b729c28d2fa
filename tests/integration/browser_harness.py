"""A real browser for the console's tests and its screenshot: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver (both installed by ``scripts/browser.sh install`` where missing, as root).

Nothing is fetched from elsewhere: the driver and the browser are the installed ones (Selenium's own
driver download is never used, since both paths are given).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
BROWSER_SH = REPO_DIR / "scripts" / "browser.sh"


class NoBrowser(RuntimeError):
    """chromium, chromedriver or selenium cannot be had here; the message says why (one line)."""


def browser_paths(timeout: float = 900.0) -> tuple[str, str]:
    """(chromium, chromedriver), installed with apt-get first when missing and this is root."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise NoBrowser("selenium is not installed (it is in the test extra: bash scripts/install.sh)") from None
    try:
        proc = subprocess.run(["bash", str(BROWSER_SH), "install"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise NoBrowser(f"scripts/browser.sh install did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
        raise NoBrowser(lines[-1])
    chromium, driver = proc.stdout.split()[-2:]
    return chromium, driver


def chrome(paths: tuple[str, str], *, width: int = 1280, height: int = 900, tz: str | None = None):
    """A headless chromium of ``width`` x ``height`` CSS pixels; ``tz`` sets its local time zone."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = paths
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--hide-scrollbars",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = dict(os.environ)
    if tz is not None:
        env["TZ"] = tz
    service = Service(executable_path=driver, env=env)
    return webdriver.Chrome(service=service, options=opts)


def console_errors(driver) -> list[dict]:
    """The browser console's errors: a script error, anything the Content-Security-Policy blocked. Not the
    network's (an API refusal the page shows is a 4xx the browser logs too)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and e.get("source") != "network"]
