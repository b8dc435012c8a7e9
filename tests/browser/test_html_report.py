"""`audit-job report --html` opened in a real headless Chromium (Debian's package): the
rendered DOM has the chart and both tables, and a screenshot is taken. Network access is
cut off for the browser, so anything the page tried to fetch would be missing.

Locally a missing chromium skips with the reason; under CI (CI=true) it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import cli_env, run_cli, write_config
from reporting_scenario import build_scenario, scenario_pairs

pytestmark = pytest.mark.timeout(90)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(f"{reason}; the browser test is mandatory when CI is set")
        pytest.skip(reason)
    return found


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            # Any http(s) fetch from the page fails: the report must not need one.
            "--proxy-server=127.0.0.1:9",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_report_renders_in_chromium(tmp_path: Path) -> None:
    binary = chromium()
    url = f"sqlite+aiosqlite:///{tmp_path}/audit.db"
    config = write_config(tmp_path / "audit-job.toml", {"database": {"url": url}})
    done = run_cli("--config", str(config), "db", "upgrade", env=cli_env())
    assert done.returncode == 0, done.stderr
    pairs = scenario_pairs()
    violating = (pairs[6], pairs[10])  # active in both runs, expected inactive
    scenario = await build_scenario(url, tmp_path, expect_inactive=violating)
    page = tmp_path / "report.html"
    made = run_cli("--config", str(config), "report", "--html", str(page), env=cli_env())
    assert made.returncode == 0, made.stderr
    assert f"wrote {page}" in made.stdout

    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    chart = re.search(r'<svg id="share-chart".*?</svg>', html, re.S)
    assert chart, html[:2000]
    assert len(re.findall(r'<path class="series"[^>]* d="M[^"]+L', chart.group(0))) == 3
    assert chart.group(0).count("<circle") == 6  # 3 apps x 2 runs
    per_app = re.search(r'<table id="per-app">.*?</table>', html, re.S)
    assert per_app and per_app.group(0).count("<tr>") == 1 + 3  # header + one per app
    changes = re.search(r'<table id="changes">.*?</table>', html, re.S)
    assert changes
    assert changes.group(0).count("<tr>") == 1 + len(scenario.flipped) + len(scenario.gone)
    for _app_id, user_id in scenario.flipped:
        assert f"<td>{user_id}</td>" in changes.group(0)
    violations = re.search(r'<table id="violations">.*?</table>', html, re.S)
    assert violations and violations.group(0).count("<tr>") == 1 + len(violating)
    for app_id, user_id in violating:
        assert f"<td>{app_id}</td><td>{user_id}</td><td>inactive</td><td>active</td>" in (
            violations.group(0)
        )
    assert "2 open: answers that contradict the expected state; this run opened 0" in html

    shot = tmp_path / "report.png"
    taken = headless(
        binary,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        page.as_uri(),
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2000)
    assert len(png) > 30_000  # a blank page compresses to a few KB; ours has a chart
