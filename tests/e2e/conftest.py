"""Fixtures the end-to-end tests share: the console built, and Debian's Chromium."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from api.console import BUILT
from tests.e2e.test_browser import CHROMIUM, FLAGS

WEB = Path(__file__).parents[2] / "web"


@pytest.fixture(scope="module")
def console_built() -> None:
    """The console as `pip install .` builds it (npm, from web/)."""
    if not (BUILT / "console.js").is_file():
        subprocess.run(["npm", "--prefix", str(WEB), "ci", "--no-audit", "--no-fund"], check=True)
        subprocess.run(["npm", "--prefix", str(WEB), "run", "build"], check=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()
