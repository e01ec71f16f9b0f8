"""The results page of a real ci-scale run (`repro submit smoke --scale ci`, the README main job
at the smallest scale) in headless Chromium, driven by Playwright: every image and video loads
from disk, no request leaves the machine, each table has its rows, and the page fits a phone.

Needs Debian's `chromium` (`.ci/chromium-up` installs it; .ci/run does) and the `playwright`
package (the test extra). Without them the tests are skipped with the reason, unless
REPRO_REQUIRE_BROWSER=1 (.ci/run), which makes that a failure.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from repro.cli import main
from repro.targets import paper
from repro.targets.jobfiles import load_target

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PHONE = {"width": 390, "height": 844}


def _browser_or_skip():
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, reason = None, "the playwright package is not installed"
    else:
        reason = "" if chromium else "no `chromium` on PATH (.ci/chromium-up installs it)"
    if reason:
        if os.environ.get("REPRO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"REPRO_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return chromium, sync_playwright


@pytest.fixture(scope="module")
def page_path(tmp_path_factory) -> Path:
    """The page that a ci-scale `repro submit smoke` ends with (the path it prints)."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPRO_WORKDIR", str(root / "work"))
        patch.setenv("REPRO_RESULTS", str(root / "results"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["submit", "smoke", "--scale", "ci"])
    printed = out.getvalue()
    assert code == 0, printed[-3000:]
    match = re.search(r"^report: +(\S+index\.html)", printed, re.M)
    assert match, printed[-2000:]
    return Path(match.group(1))


@pytest.fixture(scope="module")
def browser():
    chromium, sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _open(browser, path: Path, viewport: dict | None = None):
    """A page at `path`; every request is recorded, and any that would leave the machine is
    refused."""
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
    requests: list[str] = []

    def route(request_route):
        requests.append(request_route.request.url)
        if request_route.request.url.startswith(("file://", "data:")):
            request_route.continue_()
        else:
            request_route.abort()
    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    return page, requests


def test_every_image_and_video_loads_offline_and_tables_have_their_rows(browser, page_path,
                                                                        tmp_path):
    page, requests = _open(browser, page_path)
    page.wait_for_function("[...document.querySelectorAll('video')]"
                           ".every(v => v.readyState >= 2)", timeout=30_000)
    images = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), "
                           "i.complete && i.naturalWidth > 0])")
    videos = page.evaluate("[...document.querySelectorAll('video')].map(v => "
                           "[v.currentSrc, v.videoWidth, v.duration])")
    assert images and all(ok for _, ok in images), [src for src, ok in images if not ok]
    assert len(videos) == 4                 # 2 clips x (opendv_ablation, opendv_long)
    assert all(width > 0 and duration > 0 for _, width, duration in videos), videos
    leaving = [url for url in requests if not url.startswith(("file://", "data:"))]
    assert not leaving, leaving
    assert {Path(src).suffix for src, _ in images} >= {".png"}
    for href in page.evaluate("[...document.querySelectorAll('a[href]')]"
                              ".map(a => a.getAttribute('href'))"):
        if not href.startswith("#"):
            assert (page_path.parent / href).is_file(), href

    target = load_target("smoke")
    for table in target.tables():
        rows = page.locator(f'table.ours-table[data-table="{table}"] tbody tr').count()
        cells = paper.load_paper_table(table)["cell"].nunique()
        assert rows >= cells, (table, rows, cells)
        if "seconds" not in paper.variant_columns(paper.load_paper_table(table)):
            assert rows == cells, (table, rows, cells)
    assert page.locator("text=random-weights detector: not comparable").count() >= 1
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_page_fits_a_phone_and_wide_tables_scroll_in_their_box(browser, page_path):
    page, _ = _open(browser, page_path, PHONE)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways at {PHONE['width']} px: {widths}"
    boxes = page.evaluate("[...document.querySelectorAll('.scroll')].map(b => "
                          "[b.scrollWidth > b.clientWidth, getComputedStyle(b).overflowX])")
    assert any(wide for wide, _ in boxes), "no table is wider than a phone: nothing tested"
    assert all(overflow == "auto" for _, overflow in boxes)
    page.close()

