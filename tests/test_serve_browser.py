"""The drawing page in a real headless Chromium: draw digits stroke by stroke, read the answer, clear."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from serving import running_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(trained_checkpoint):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with running_server(trained_checkpoint) as (url, _pid), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 520})
            page.goto(url + "/")
            page.wait_for_function("document.querySelector('#model').textContent.includes('modern')")
            yield page
        finally:
            browser.close()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw strokes given in canvas pixels (560 x 280) with the mouse: down, move through points, up."""
    box = page.locator("#canvas").bounding_box()
    sx, sy = box["width"] / 560, box["height"] / 280
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * sx, box["y"] + y * sy)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=4)
        page.mouse.up()


def shown_digit(page, expected: str) -> str:
    page.wait_for_function(f"document.querySelector('#digit').textContent === {expected!r}", timeout=10_000)
    return page.locator("#digit").text_content()


def ink(page) -> int:
    """How many canvas pixels are not black."""
    return page.evaluate(
        """() => { const c = document.querySelector('#canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )


def clear(page) -> None:
    page.click("#clear")
    assert page.locator("#digit").text_content() == "–"
    assert ink(page) == 0
    widths = page.eval_on_selector_all("#bars .fill", "els => els.map(e => e.style.width)")
    assert len(widths) == 10 and set(widths) <= {"0px", "0%"}


def test_draw_a_one(page):
    draw(page, [[(140, 45), (141, 140), (142, 235)]])
    assert ink(page) > 1000
    assert shown_digit(page, "1") == "1"
    top = page.eval_on_selector("#bar-1", "e => parseFloat(e.style.width)")
    assert top > 50  # the bar for class 1 is the long one
    clear(page)


def test_draw_a_seven_then_clear(page):
    draw(page, [[(70, 60), (140, 58), (210, 60), (175, 130), (145, 190), (125, 240)]])
    assert shown_digit(page, "7") == "7"
    page.wait_for_timeout(400)  # let the bars' width transition finish before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "draw_page.png"), full_page=True)
    clear(page)


def ring(cx: float, cy: float = 140, rx: float = 60, ry: float = 90) -> list[tuple[float, float]]:
    return [(cx + rx * math.sin(t / 24 * 2 * math.pi), cy - ry * math.cos(t / 24 * 2 * math.pi)) for t in range(26)]


def test_draw_a_zero(page):
    draw(page, [ring(140)])
    assert shown_digit(page, "0") == "0"
    clear(page)


def test_write_a_three_digit_number_and_see_each_digit_under_it(page):
    one = [(95, 50), (96, 140), (97, 230)]
    seven = [(180, 60), (240, 58), (300, 60), (272, 130), (250, 190), (235, 235)]
    draw(page, [one, seven, ring(420, rx=45, ry=85)])
    assert shown_digit(page, "170") == "170"
    readings = page.eval_on_selector_all("#readings .reading b", "els => els.map(e => e.textContent)")
    assert readings == ["1", "7", "0"]
    lefts = page.eval_on_selector_all("#readings .reading", "els => els.map(e => parseFloat(e.style.left))")
    assert lefts == sorted(lefts) and lefts[0] < 25 < lefts[1] < 60 < lefts[2]  # under each digit, in %
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "draw_number.png"), full_page=True)
    clear(page)
    assert page.eval_on_selector_all("#readings .reading", "els => els.length") == 0


def bars(page) -> list[float]:
    return page.eval_on_selector_all("#bars .fill", "els => els.map(e => parseFloat(e.style.width) || 0)")


def box_ink(page) -> int:
    """How many pixels of the large 'what the network sees' box are not black."""
    return page.evaluate(
        """() => { const d = document.querySelector('#prepared').getContext('2d').getImageData(0, 0, 28, 28).data;
                   let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )


def hover(page, x: float, y: float) -> None:
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + x * box["width"] / 560, box["y"] + y * box["height"] / 280, steps=3)


def test_a_number_shows_the_bars_and_the_field_of_the_digit_under_the_pointer(page):
    four = [[(60, 50), (45, 160), (135, 160)], [(110, 60), (112, 150), (114, 240)]]
    seven = [(190, 60), (250, 58), (310, 60), (282, 130), (260, 190), (245, 235)]
    two = [(375, 90), (400, 55), (450, 50), (480, 85), (470, 130), (420, 190), (380, 235), (490, 235)]
    draw(page, [*four, seven, two])
    page.wait_for_function("document.querySelectorAll('#readings .reading').length === 3", timeout=10_000)
    readings = page.eval_on_selector_all("#readings .reading b", "els => els.map(e => e.textContent)")
    assert "".join(readings) == page.locator("#digit").text_content()

    # before: the box was black and every bar 0.0% for any number of two or more digits
    for i, (x, y) in enumerate([(90, 140), (250, 140), (430, 140)]):
        hover(page, x, y)
        page.wait_for_function(f"document.querySelector('#seen').textContent.includes('digit {i + 1} of 3')")
        widths = bars(page)
        assert 95 < sum(widths) < 105, widths  # one digit's ten probabilities
        assert str(widths.index(max(widths))) == readings[i]  # the longest bar is that digit's reading
        assert box_ink(page) > 20  # its 28x28 field, not a black box
        selected = page.eval_on_selector_all(
            "#readings .reading", "els => els.map(e => e.classList.contains('selected'))"
        )
        assert selected == [k == i for k in range(3)]
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "draw_number_bars.png"), full_page=True)
    clear(page)
    assert box_ink(page) == 0 and page.locator("#seen").text_content() == "what the network sees"


def test_the_page_names_the_served_file_and_its_hash(page):
    text = page.locator("#model").text_content()
    assert "model.safetensors" in text and len(text.split(", ")[-1].rstrip(")")) == 12
