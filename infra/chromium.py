"""Headless Debian Chromium through selenium (the tests' and benches' browser), with the flags this
closed network needs: no network calls of its own, no sandbox (root in a VM), no GPU."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

log = logging.getLogger(__name__)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium's start failed once on a loaded machine ("DevToolsActivePort file doesn't exist": it
# exited before it was up); a second start with a fresh profile is what a person would do.
START_ATTEMPTS = 2
BASE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def headless_chromium(extra_flags: tuple[str, ...] = (), size: str = "1400,1800") -> Any:
    """A selenium driver of a fresh headless Chromium with its own profile folder, removed by ``quit()``."""
    from selenium import webdriver
    from selenium.common.exceptions import SessionNotCreatedException
    from selenium.webdriver.chrome.service import Service

    for attempt in range(1, START_ATTEMPTS + 1):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp(prefix="neurolake-chromium-")
        for flag in (*BASE_FLAGS, *extra_flags, f"--window-size={size}", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
            break
        except SessionNotCreatedException as exc:
            shutil.rmtree(profile, ignore_errors=True)
            if attempt == START_ATTEMPTS:
                raise
            log.warning("Chromium did not start (%s); starting it again", str(exc).splitlines()[0])
    # Each profile is tens of MB under /tmp: it goes with the browser, not at the machine's next boot.
    quit_browser = driver.quit

    def quit_and_remove_profile() -> None:
        try:
            quit_browser()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_remove_profile  # type: ignore[method-assign]
    return driver
