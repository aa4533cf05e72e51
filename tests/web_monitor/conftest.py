"""Monitor test fixtures: ``sideman serve`` with its web monitor on free ports, and Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..daemon.conftest import FAST_PARAMS, TINY
from ..daemon.conftest import tiny_model as tiny_model  # noqa: F401  (the fixture, re-exported)
from ..daemon.oscclient import DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
# As root in a container with no network: no sandbox, no GPU, none of Chromium's background calls.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


class MonitorProcess(DaemonProcess):
    """``sideman serve`` with its monitor on a free port; ``url`` is the monitor's page."""

    SERVE_ARGS = ("--port", "0", "--monitor-port", "0")
    MONITOR = re.compile(r"web monitor on (http://[\d.]+:\d+/)")

    def __init__(self, *args: str, timeout: float = 120.0) -> None:
        super().__init__(*args, timeout=timeout)
        line = self.proc.stdout.readline()  # printed right after the ready line
        match = self.MONITOR.search(line)
        if match is None:
            self.proc.kill()
            raise RuntimeError(f"expected the monitor's address after the ready line, got {line!r}")
        self.url = match.group(1)


@pytest.fixture(scope="module")
def monitor(tiny_model, tmp_path_factory):  # noqa: F811
    proc = MonitorProcess("--model", str(tiny_model), "--save-dir", str(tmp_path_factory.mktemp("saves")), *FAST_PARAMS)
    yield proc
    code = proc.stop()
    assert code == 0, "".join(proc.stderr_lines)[-3000:]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (no browser download)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


__all__ = ["CHROMIUM_ARGS", "MonitorProcess", "TINY"]
