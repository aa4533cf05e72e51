"""``sideman bench daemon --quick`` end to end with a tiny bundle: every figure printed and sane.

Times are not asserted (machines are noisy); counts, shares and the output's shape are.
"""

import re
import subprocess
import sys

from .conftest import FAST_PARAMS


def test_quick_daemon_bench_prints_every_figure(tiny_model):
    run = subprocess.run(
        [sys.executable, "-m", "sideman.daemon.cli", "bench", "daemon", "--quick", "--model", str(tiny_model), *FAST_PARAMS],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, run.stderr[-3000:] + out
    assert f"model: {tiny_model}" in out and "density_hard_limit=8" in out
    assert re.search(r"start-up to ready .* \d+\.\d s", out)

    pings = re.findall(r"ping, (idle|while a generation runs)\s+n=\s*(\d+)\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms", out)
    assert [p[0] for p in pings] == ["idle", "while a generation runs"]
    for _, n, p50, p99 in pings:
        assert int(n) > 0 and 0 < float(p50) <= float(p99)
    assert "target: ping p99 <= 1 ms while generating" in out

    rates = re.findall(r"^\s*([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+(lossless|lost|refused)", out, re.M)
    assert rates, out
    for row in rates:
        sent, stored, refused, lost = (int(x.replace(",", "")) for x in row[2:6])
        assert 0 < stored <= sent and stored + refused + lost == sent  # every note accounted for
    assert rates[0][6] == "lossless"  # 1,000 notes a second is far below every limit
    assert "highest lossless note rate" in out

    session = re.search(r"^\s*240\s+1\.00\s+(\d+)/\s*(\d+)\s+(\d+)%\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    assert session, out
    on_time, expected = int(session[1]), int(session[2])
    assert 0 < expected <= 16 and 0 <= on_time <= expected
    assert int(session[8]) == 0  # no job failed

    rss = re.search(r"100 bars ([\d.]+) MiB, 1,000 bars ([\d.]+) MiB", out)
    assert rss and 50 < float(rss[1]) < 4000 and float(rss[2]) > 0
    assert "bars in memory" in out
