"""``sideman bench monitor``: what the web monitor costs and how the page keeps up.

One ``sideman serve --random-init`` with its monitor runs in a child process, the demo performer
plays a chorale into it at 240 BPM (started over Socket.IO, so no browser is needed for the
baseline), and Debian's headless Chromium opens the page through Playwright. Printed:

- the daemon's ping p99 with no page attached, with the page attached and rendering, and without
  again (the monitor must not move p99 by more than 0.2 ms);
- the page's frames per second during the 240 BPM session (``window.sidemanMonitor.fps()``);
- the page's load time: navigation to the first snapshot drawn, cold and warm (HTTP cache).
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

from sideman.daemon.bench import DEFAULT_PARAMS, DaemonChild, ServeArgs, percentile, ping_from_child

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
TARGET_PING_SHIFT_MS = 0.2
CONNECTED = (
    "document.querySelector('#connection')?.textContent.toLowerCase().includes('connected')"
    " && !document.querySelector('#connection').textContent.toLowerCase().includes('dis')"
)


def _ping_p99(daemon: DaemonChild, seconds: float) -> tuple[float, int]:
    pings = ping_from_child(daemon.address, until=time.monotonic() + seconds)
    rtts = [rtt for _, rtt in pings]
    return percentile(rtts, 99), len(rtts)


def _start_demo(url: str, bpm: float) -> tuple[object, str]:
    import socketio

    client = socketio.SimpleClient()
    client.connect(url.rstrip("/"), transports=["websocket"])
    _, snapshot = client.receive(timeout=30)
    piece = snapshot["info"]["demo"]["default"] or snapshot["info"]["demo"]["pieces"][0]["id"]
    ack = client.call("demo", {"action": "start", "piece": piece, "bpm": bpm}, timeout=30)
    if not ack.get("ok"):
        raise RuntimeError(f"the demo performer did not start: {ack}")
    return client, piece


def run_monitor_bench(quick: bool = False, model: str | None = None) -> dict[str, float]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError("sideman bench monitor needs Playwright: pip install -e '.[dev]'") from exc
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    seconds = 6.0 if quick else 20.0
    bpm = 240.0
    serve = ServeArgs(model=model, params=DEFAULT_PARAMS, monitor=True)
    print("== sideman bench monitor ==")
    print(serve.describe())
    figures: dict[str, float] = {}
    daemon = DaemonChild(serve, None)
    try:
        print(f"monitor: {daemon.monitor_url}")
        demo, piece = _start_demo(daemon.monitor_url, bpm)
        print(f"demo performer: {piece} at {bpm:.0f} BPM (a bar every {240 / bpm:.2f} s), generation running")
        time.sleep(4.0)  # the session fills its buffer and the first jobs run
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                figures.update(_measure(browser, daemon, seconds))
            finally:
                browser.close()
        demo.call("demo", {"action": "stop"}, timeout=30)
        demo.disconnect()
    finally:
        daemon.stop()
    return figures


def _measure(browser, daemon: DaemonChild, seconds: float) -> dict[str, float]:
    without, n_without = _ping_p99(daemon, seconds)
    print(f"ping p99, no page attached            {without:6.3f} ms  (n={n_without})")

    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(daemon.monitor_url)
    page.wait_for_function(CONNECTED, timeout=60_000)
    cold_ms = 1e3 * (time.perf_counter() - started)
    started = time.perf_counter()
    page.reload()
    page.wait_for_function(CONNECTED, timeout=60_000)
    warm_ms = 1e3 * (time.perf_counter() - started)
    print(f"page load to connected and drawn       cold {cold_ms:6.0f} ms   warm {warm_ms:6.0f} ms")

    fps: list[float] = []
    until = time.monotonic() + seconds
    result: dict[str, float] = {}  # pings from another process while this one samples the frame rate

    def pinger() -> None:
        result["p99"], result["n"] = _ping_p99(daemon, seconds)

    thread = threading.Thread(target=pinger)
    thread.start()
    while time.monotonic() < until:
        page.wait_for_timeout(1000)
        fps.append(float(page.evaluate("window.sidemanMonitor ? window.sidemanMonitor.fps() : NaN")))
    thread.join()
    with_page, n_with = result["p99"], int(result["n"])
    print(f"ping p99, page attached                {with_page:6.3f} ms  (n={n_with})")
    notes = page.evaluate("document.querySelector('#pianoroll')?.dataset.notesGenerated")
    context.close()

    again, n_again = _ping_p99(daemon, seconds)
    print(f"ping p99, no page attached (again)     {again:6.3f} ms  (n={n_again})")
    baseline = min(without, again)
    shift = with_page - baseline
    verdict = "met" if shift <= TARGET_PING_SHIFT_MS else "NOT met"
    print(f"monitor's effect on ping p99: {shift:+.3f} ms against the better no-page run (target <= +{TARGET_PING_SHIFT_MS} ms: {verdict})")
    valid = [f for f in fps if f == f]
    mean_fps = statistics.fmean(valid) if valid else float("nan")
    print(
        f"page frames per second at 240 BPM: mean {mean_fps:5.1f}, min {min(valid, default=float('nan')):5.1f} "
        f"over {len(valid)} s; generated notes drawn at the end: {notes}"
    )
    return {
        "ping_p99_without_ms": without,
        "ping_p99_with_ms": with_page,
        "ping_p99_without_again_ms": again,
        "ping_p99_shift_ms": shift,
        "fps_mean": mean_fps,
        "load_cold_ms": cold_ms,
        "load_warm_ms": warm_ms,
    }


__all__ = ["run_monitor_bench"]
