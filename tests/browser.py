"""A real headless browser for tests of web pages: Debian's Chromium, driven by
Selenium through Debian's chromedriver (`make setup` installs both).

Selenium is given both paths, so it never runs Selenium Manager (which would try to
download a browser). A missing browser fails the test (never skips): CI must notice.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)


def start_chromium(download_dir: Path | None = None) -> webdriver.Chrome:
    """A fresh headless Chromium session (its own profile, so sessions share nothing)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `make setup` "
            "(it apt-get installs chromium and chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    if download_dir is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(download_dir)})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the test, quit afterwards."""
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
