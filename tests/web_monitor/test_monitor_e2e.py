"""The monitor end to end: ``sideman serve`` with its monitor in a child process, the page in
Debian's headless Chromium (Playwright), the daemon also watched over OSC.

The page is opened, the demo performer started from it, generated notes appear in the piano
roll and jobs in the timing plot, a parameter changed on the page changes the daemon's state,
and a screenshot is saved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import socketio

from ..daemon.oscclient import OscTestClient

SCREENSHOT_DIR = Path(os.environ.get("SIDEMAN_SCREENSHOT_DIR", "bench-results"))
WAIT_MS = 90_000  # generous: two cores shared by the daemon, its engine process and Chromium


@pytest.fixture
def page(browser, monitor):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(monitor.url)
    page.wait_for_function("document.querySelector('#connection')?.textContent.toLowerCase().includes('connected') "
                           "&& !document.querySelector('#connection').textContent.toLowerCase().includes('dis')", timeout=30_000)
    yield page
    context.close()


def osc_state(monitor) -> dict:
    client = OscTestClient(monitor.address)
    try:
        return client.state()
    finally:
        client.close()


def test_the_demo_plays_generated_notes_appear_and_jobs_are_timed(page, monitor):
    page.select_option("#demo-piece", index=0)
    page.fill("#demo-bpm", "200")
    page.click("#demo-start")
    page.wait_for_function("Number(document.querySelector('#pianoroll').dataset.notesHuman) > 0", timeout=WAIT_MS)
    page.wait_for_function("Number(document.querySelector('#pianoroll').dataset.notesGenerated) > 0", timeout=WAIT_MS)
    page.wait_for_function("Number(document.querySelector('#timing-plot').dataset.jobs) > 0", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#prompt-window').dataset.jobId", timeout=WAIT_MS)
    state = osc_state(monitor)
    assert state["state"] == "RUNNING" and state["jobs"].get("done", 0) > 0, state
    assert "running" in page.inner_text("#demo-state").lower()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "monitor.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert not page.errors, page.errors


def test_a_parameter_changed_on_the_page_changes_the_daemon(page, monitor):
    page.fill("#param-temperature", "0.7")
    page.press("#param-temperature", "Enter")
    page.locator("#param-temperature").dispatch_event("change")
    for _ in range(50):
        if abs(osc_state(monitor)["params"]["temperature"] - 0.7) < 1e-6:
            break
        page.wait_for_timeout(100)
    assert abs(osc_state(monitor)["params"]["temperature"] - 0.7) < 1e-6
    assert not page.errors, page.errors


def test_stopping_the_demo_stops_the_session(page, monitor):
    page.click("#demo-stop")
    page.wait_for_function("!document.querySelector('#demo-state').textContent.toLowerCase().includes('running')"
                           " || document.querySelector('#demo-state').textContent.toLowerCase().includes('not running')", timeout=30_000)
    for _ in range(50):
        if osc_state(monitor)["state"] != "RUNNING":
            break
        page.wait_for_timeout(100)
    assert osc_state(monitor)["state"] != "RUNNING"


# ---- the Socket.IO side without a browser ------------------------------------------------------
@pytest.fixture
def sio(monitor):
    client = socketio.SimpleClient()
    client.connect(monitor.url.rstrip("/"), transports=["websocket"])
    yield client
    client.disconnect()


def test_a_connecting_page_gets_a_snapshot_with_the_servers_ranges(sio):
    event, snapshot = sio.receive(timeout=10)
    assert event == "snapshot"
    params = {p["name"]: p for p in snapshot["info"]["params"]}
    assert params["temperature"]["min"] == 0.1 and params["buffer_bars"]["structural"]
    assert snapshot["info"]["demo"]["pieces"] and "session" in snapshot


def test_controls_reach_only_the_session_api_and_errors_name_the_argument(sio, monitor):
    sio.receive(timeout=10)
    refused = sio.call("control", {"address": "/midigpt/session/save", "args": ["x.mid"]}, timeout=10)
    assert refused["ok"] is False and refused["code"] == 4 and "not available" in refused["message"]
    bad = sio.call("control", {"address": "/midigpt/param/set", "args": ["temperature", 99.0]}, timeout=10)
    assert bad["ok"] is False and bad["code"] == 4 and "temperature" in bad["message"]
    ok = sio.call("control", {"address": "/midigpt/state/query", "args": []}, timeout=10)
    assert ok["ok"] is True and json.loads(ok["replies"][0][1][0])["model"]
    nonsense = sio.call("control", "not an object", timeout=10)
    assert nonsense["ok"] is False


def test_other_origins_are_refused(monitor):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(monitor.url + "health", headers={"Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    client = socketio.SimpleClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(monitor.url.rstrip("/"), transports=["websocket"], headers={"Origin": "http://evil.example"})
    with urllib.request.urlopen(monitor.url + "health", timeout=10) as same_origin:
        assert json.loads(same_origin.read())["status"] == "ok"
