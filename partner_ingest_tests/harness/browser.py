"""Headless Chromium for the UI tests: Debian's ``chromium`` (/usr/bin/chromium) driven by Playwright for Python.

Playwright's pip package ships its own driver; its browser downloads (``playwright install``) are never used.
The browser starts with a fresh profile, no background networking, and may reach nothing but 127.0.0.1:
host resolution maps every other name to nothing, and every request to another host is aborted (and listed
in ``blocked`` so a test can report it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
LOOPBACK_HOSTS = {"127.0.0.1"}
# On localhost the Dagster UI opens a "Join the Dagster community" dialog over every page a second after it
# loads, until it is dismissed (src/NUX/CommunityNux.tsx). Dismissed in the browser's own storage, as its Skip
# button does, before any page script runs: the demo's server-side state stays untouched.
DISMISS_DAGSTER_NUX = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"


@dataclass
class Browser:
    context: object  # playwright.sync_api.BrowserContext (imported lazily: only the browser tests need it)
    blocked: list[str] = field(default_factory=list)

    def new_page(self):
        return self.context.new_page()


def css_string(value: str) -> str:
    """``value`` as a quoted CSS string, for an attribute selector."""
    return '"' + "".join(f"\\{ord(c):x} " if c in '"\\' or ord(c) < 0x20 else c for c in value) + '"'


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh installs it)")


@contextlib.contextmanager
def headless_chromium(profile_dir: Path, *, width: int = 1600, height: int = 1200) -> Iterator[Browser]:
    """A persistent context on a fresh profile in ``profile_dir``; closed (and the driver stopped) on exit."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    profile_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS, viewport={"width": width, "height": height}, locale="en-US",
            timezone_id="UTC", service_workers="block")
        browser = Browser(context)
        try:
            def only_loopback(route):
                if urlsplit(route.request.url).hostname in LOOPBACK_HOSTS:
                    route.continue_()
                else:
                    browser.blocked.append(route.request.url)
                    route.abort("blockedbyclient")

            context.route("**/*", only_loopback)
            context.add_init_script(DISMISS_DAGSTER_NUX)
            yield browser
        finally:
            context.close()
