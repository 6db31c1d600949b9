"""The report of ``validate --quick`` rendered in a real browser: Debian's headless Chromium driven
by selenium through Debian's chromedriver (``make test`` and ``.ci/run`` install both with apt-get
when missing; nothing is downloaded by the test). Served from a static file server on localhost
and opened from disk, the page must show no console error, load every image, resolve every anchor
and every link to a result file, request nothing from another origin, and its summary's counts
(per section, for all the paper's claims, and in all) must equal the verdicts. A screenshot of
the top of the page is saved into the report folder. ``check_page`` is the check; the last test
breaks an image path and an anchor and sees it fail."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
STATUSES = ("holds", "violated", "setting-dependent", "inconclusive", "outside domain", "vacuous")  # (as shown)
# flags for a closed network: no background connections, no first-run or component updates
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # (no request log in the test output)
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"the browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (make test and .ci/run do it when missing)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER), log_output=subprocess.DEVNULL),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def serve():
    """``serve(folder) -> base URL``: a static file server on localhost for the test's length."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _resolves(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def check_page(driver, url: str, verdicts: list[dict], *, served: bool = True) -> list[str]:
    """Everything wrong with the page at ``url`` for the verdict rows ``verdicts`` (empty: none)."""
    driver.get_log("browser")  # (drop what an earlier page logged)
    driver.get(url)
    problems = [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    images = driver.execute_script("return Array.from(document.images).filter(i => i.getAttribute('src'))"
                                   ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
    problems += [f"image not loaded: {src}" for src, complete, width in images if not (complete and width > 0)]
    if not images:
        problems.append("no images on the page")
    ids = set(driver.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id);"))
    for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
                                      ".map(a => a.getAttribute('href'));"):
        if href[1:] not in ids:
            problems.append(f"anchor without a target: {href}")
    problems += [f"no anchor for verdict {r['key']}" for r in verdicts if f"verdict-{r['key']}" not in ids]
    links = driver.execute_script("return Array.from(document.querySelectorAll('a.result, a.enlarge'))"
                                  ".map(a => a.href);")
    problems += [f"link does not resolve: {link}" for link in links if served and not _resolves(link)]
    foreign = driver.execute_script(
        "const base = arguments[0]; return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat(Array.from(document.querySelectorAll('[src],[href]')).map(e => e.src || e.href))"
        ".filter(u => u && !u.startsWith(base) && !u.startsWith('about:') && u !== 'data:,');", url.rsplit("/", 1)[0])
    problems += [f"request outside the report: {u}" for u in sorted(set(foreign))]
    problems += _summary_problems(driver, verdicts)
    return problems


def _summary_problems(driver, verdicts: list[dict]) -> list[str]:
    summary = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.summary tr[data-family]')).map(r => [r.dataset.family,"
        " Array.from(r.querySelectorAll('td[data-status]')).map(c => [c.dataset.status, Number(c.textContent)])]);")
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('section[data-family] tbody.verdict'))"
        ".map(b => [b.closest('section').dataset.family, b.dataset.status, b.dataset.key]);")
    problems = []
    rows = Counter((family, status) for family, status, _ in shown)
    for family, counts in summary:
        for status, n in counts:
            want = sum(r["status"] == status for r in verdicts) if family == "all" else rows[(family, status)]
            if n != want:
                problems.append(f"summary {family}: {n} {status}, the verdicts say {want}")
    kinds = driver.execute_script(  # (the line counting every verdict of one kind: the paper's claims)
        "return Array.from(document.querySelectorAll('table.summary tr[data-kind-total]'))"
        ".map(r => [r.dataset.kindTotal, Array.from(r.querySelectorAll('td[data-status]'))"
        ".map(c => [c.dataset.status, Number(c.textContent)])]);")
    for kind, counts in kinds:
        for status, n in counts:
            want = sum(r["status"] == status and r["kind"] == kind for r in verdicts)
            if n != want:
                problems.append(f"summary of all {kind}s: {n} {status}, the verdicts say {want}")
    keys = Counter(key for _, _, key in shown)
    problems += [f"verdict {r['key']} shown {keys[r['key']]} times" for r in verdicts if keys[r["key"]] != 1]
    problems += [f"a row for no verdict: {k}" for k in sorted(set(keys) - {r["key"] for r in verdicts})]
    return problems


def test_the_report_renders_in_chromium(quick_validate, browser, serve):
    report = quick_validate.report
    verdicts = json.loads((report / "verdicts.json").read_text())
    assert all(r["key"] and r["key"].replace("_", "").replace(".", "").isalnum() for r in verdicts)
    url = serve(report) + "index.html"
    assert check_page(browser, url, verdicts) == []
    browser.execute_script("window.scrollTo(0, 0);")
    assert browser.save_screenshot(str(report / "screenshot.png"))
    assert (report / "screenshot.png").stat().st_size > 10_000
    # a figure enlarges in the page on a click, at its full resolution
    browser.find_element("css selector", "a.enlarge").click()
    opened = browser.execute_script("const d = document.getElementById('viewer'), i = document.getElementById("
                                    "'viewer-image'); return [d.open, i.complete, i.naturalWidth, i.clientWidth];")
    assert opened[0] and opened[1] and opened[2] > 0
    # opened from disk, with no server at all
    assert check_page(browser, (report / "index.html").resolve().as_uri(), verdicts, served=False) == []
    size = sum(p.stat().st_size for p in report.rglob("*") if p.is_file())
    assert size < 20 * 2**20, f"report folder {size / 2**20:.1f} MiB"


def test_a_broken_image_or_anchor_fails_the_check(quick_validate, browser, serve, tmp_path):
    report = tmp_path / "report"
    shutil.copytree(quick_validate.report, report)
    verdicts = json.loads((report / "verdicts.json").read_text())
    page = (report / "index.html").read_text()
    src = page.split('<img src="', 1)[1].split('"', 1)[0]
    key = verdicts[0]["key"]
    page = page.replace(f'<img src="{src}"', '<img src="missing/figure.png"', 1)
    page = page.replace(f'id="verdict-{key}"', 'id="elsewhere"', 1)
    (report / "index.html").write_text(page)
    problems = check_page(browser, serve(report) + "index.html", verdicts)
    assert "image not loaded: missing/figure.png" in problems
    assert f"anchor without a target: #verdict-{key}" in problems and f"no anchor for verdict {key}" in problems
