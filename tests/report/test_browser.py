"""A real browser opens the reports: headless Chromium, with the network cut off, shows
the plots of checked-in recordings of real runs, with no console error and nothing loaded
from elsewhere.  The browser is driven by `tests.report.browser`; its own checks come
first, on hand-written pages, so that a report passing here is known to be looked at."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from milonga.report import write_report
from milonga.report.plots import SERIES_COLOURS
from tests.report.browser import (
    TIMEOUT_SECONDS,
    WINDOW,
    PageCheck,
    browser,
    chromium_path,
    leftovers,
    open_offline,
)

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed: install Debian's chromium package "
    "(apt-get install chromium; .ci/run does it when run as root) to run the browser tests",
)

REPO = Path(__file__).resolve().parents[2]
FINDINGS = REPO / "tests/monitor/data/findings"
RECORDINGS = {
    "demo plain": REPO / "tests/demo/data/plain.jsonl",
    "demo fixed": REPO / "tests/demo/data/fixed.jsonl",
    "restart": FINDINGS / "server-restarted.jsonl",
    "missed-event flood": FINDINGS / "missed-events.jsonl",
    "with perf samples": FINDINGS / "slow-callback.jsonl",
}
"""Recordings of real runs, checked in: the demo's, and some of the findings' scenarios."""

INKED_SHARE = 0.03
"""The least share of the screenshot's pixels that are not white: axes, lines and text."""
COLOUR_TOLERANCE = 24
"""How far (per channel, of 255) a pixel may be from a series colour and still count:
lines are anti-aliased."""
COLOUR_PIXELS = 100
"""The least number of pixels of the series' colours: some lines drawn (a report shows
hundreds to thousands; one whose pictures are missing, none)."""

EXTERNAL = (
    "https://fonts.example.com/font.css",
    "http://cdn.example.org/plot.js",
    "http://192.0.2.1/picture.png",
)
LEAKY_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>leaky</title>
<link rel="stylesheet" href="{EXTERNAL[0]}"><script src="{EXTERNAL[1]}"></script></head>
<body><img src="{EXTERNAL[2]}" alt="x"><script>console.error("drawn badly");</script></body></html>
"""
TALL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tall</title></head>
<body style="margin:0"><div style="height:3000px;background:#1f77b4"></div></body></html>
"""


def _pixels(check: PageCheck) -> np.ndarray:
    """The screenshot of ``check`` as an array of RGB rows."""
    with Image.open(io.BytesIO(check.screenshot)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _inked_share(pixels: np.ndarray) -> float:
    """The share of ``pixels`` that are not (nearly) white."""
    return float((pixels < 250).any(axis=2).mean())


def _pixels_near(pixels: np.ndarray, colour: str) -> int:
    """How many of ``pixels`` are within `COLOUR_TOLERANCE` of ``colour`` (``#rrggbb``)."""
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels - target) <= COLOUR_TOLERANCE).all(axis=2).sum())


def _vivid(colour: str) -> bool:
    """Whether ``colour`` (``#rrggbb``) is far from any grey, as the page's text is."""
    channels = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return max(channels) - min(channels) >= 48


def _series_pixels(pixels: np.ndarray) -> int:
    """How many of ``pixels`` have one of the colours (greys left out) the report draws
    series in."""
    return sum(_pixels_near(pixels, colour) for colour in SERIES_COLOURS if _vivid(colour))


def _assert_clean(check: PageCheck, page: Path) -> None:
    """Nothing went wrong while ``page`` was open, and nothing is left of the browser."""
    assert check.console_errors == []
    assert check.failed_loads == []
    assert [url for url in check.requested if not url.startswith("data:")] == [page.as_uri()]
    assert check.profile is not None
    assert not check.profile.exists()
    assert leftovers(check.profile, check.browser_pid) == []


def test_a_page_loading_from_elsewhere_fails_visibly(tmp_path: Path) -> None:
    """The network is cut off, and the harness reports every load and console error."""
    page = tmp_path / "leaky.html"
    page.write_text(LEAKY_PAGE)

    check = open_offline(page)

    assert sorted(failure.split(": ")[0] for failure in check.failed_loads) == sorted(EXTERNAL)
    assert any("drawn badly" in error for error in check.console_errors)


def test_the_screenshot_covers_the_whole_page(tmp_path: Path) -> None:
    page = tmp_path / "tall.html"
    page.write_text(TALL_PAGE)

    check = open_offline(page)

    _assert_clean(check, page.resolve())
    pixels = _pixels(check)
    height, width, _ = pixels.shape
    assert height >= 3000
    assert _pixels_near(pixels, "#1f77b4") >= 3000 * width


def _fail_half_way(check: PageCheck) -> None:
    """Start a browser, open a tab, and fail."""
    with browser((800, 600), check) as pipe:
        pipe.call("Target.createTarget", url="about:blank")
        raise RuntimeError("half way")


def _singleton_directories() -> set[Path]:
    """The directories Chromium makes in the temporary directory for the socket that
    tells a second start of it to open a window in the first; a killed browser leaves
    its own there."""
    return set(Path(tempfile.gettempdir()).glob("org.chromium.Chromium.*"))


def test_nothing_is_left_when_the_check_fails_half_way(tmp_path: Path) -> None:
    """Not even Chromium's crash handlers, which leave its process group, nor their crash
    database, which they would otherwise keep in the user's home, nor the directory of a
    killed browser's singleton socket."""
    home_config = Path.home() / ".config" / "chromium"
    had_config = home_config.exists()
    singletons = _singleton_directories()
    check = PageCheck()

    with pytest.raises(RuntimeError, match="half way"):
        _fail_half_way(check)

    assert home_config.exists() == had_config
    assert _singleton_directories() - singletons == set()
    assert check.profile is not None
    assert not check.profile.exists()
    assert leftovers(check.profile, check.browser_pid) == []


@pytest.mark.parametrize("recording", list(RECORDINGS.values()), ids=list(RECORDINGS))
def test_the_report_of_a_real_run_shows_its_plots_offline(recording: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    write_report(recording, report, warn=pytest.fail)

    check = open_offline(report)

    _assert_clean(check, report.resolve())
    assert check.content_width <= WINDOW[0], "the page scrolls sideways"
    pixels = _pixels(check)
    assert _inked_share(pixels) >= INKED_SHARE
    assert _series_pixels(pixels) >= COLOUR_PIXELS


def test_a_report_without_its_pictures_fails_the_plot_check(tmp_path: Path) -> None:
    """The check above tells plots from a page of text and tables alone."""
    report = tmp_path / "report.html"
    write_report(RECORDINGS["demo plain"], report, warn=pytest.fail)
    report.write_text(re.sub(r"<img [^>]*>", "", report.read_text()))

    check = open_offline(report)

    _assert_clean(check, report.resolve())
    assert _series_pixels(_pixels(check)) < COLOUR_PIXELS


def test_the_browser_starts_after_a_report_in_a_plain_process(tmp_path: Path) -> None:
    """Chromium reads its pipe on fds 3 and 4, whatever the caller has there.  Under
    pytest they hold its output capture; in a plain process that has just drawn a report,
    matplotlib has opened and closed its font files there, and fds 3 and 4 are free."""
    report = tmp_path / "report.html"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from milonga.report import write_report\n"
        "from tests.report.browser import open_offline\n"
        "write_report(sys.argv[1], sys.argv[2], warn=print)\n"
        "print(len(open_offline(Path(sys.argv[2])).screenshot))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, str(RECORDINGS["demo plain"]), str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0
