"""Headless Debian Chromium through selenium (the tests' and benches' browser), with the flags this
closed network needs: no network calls of its own, no sandbox (root in a VM), no GPU."""

from __future__ import annotations

import tempfile
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
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
    """A selenium driver of a fresh headless Chromium (its own profile folder); quit it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="neurolake-chromium-")
    for flag in (*BASE_FLAGS, *extra_flags, f"--window-size={size}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
