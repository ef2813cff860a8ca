"""End to end in a real browser: `mnist-mlp serve` on a free port, Debian's Chromium driven headless by
Playwright; strokes drawn with the mouse must read as the right digit with ten bars, and otherdigits' pen set
must be what the page draws."""

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_mlp import otherdigits
from mnist_mlp.predict import to_mnist

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
SEVEN = [[(60, 60), (220, 60), (120, 240)]]  # strokes in the 280x280 pad's pixels
ONE = [[(140, 40), (140, 240)]]
ZERO = [[(140, 40), (80, 80), (70, 140), (80, 200), (140, 240), (200, 200), (210, 140), (200, 80), (140, 40)]]


@pytest.fixture(scope="module")
def server(trained):
    """`mnist-mlp serve` on a free port, as a user starts it (loadtest.start_server)."""
    from mnist_mlp import loadtest

    process, url = loadtest.start_server(trained[1])
    yield url + "/"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized screen
        page.goto(server)
        yield page
        browser.close()


def _draw(page, strokes, steps: int = 8):
    """The strokes drawn with the mouse, `steps` mouse events from one point to the next (a font's strokes
    have points a few pixels apart: one is enough)."""
    page.click("#clear")
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        with page.expect_response("**/api/predict"):
            page.mouse.move(box["x"] + stroke[0][0] * scale, box["y"] + stroke[0][1] * scale)
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=steps)
            page.mouse.up()
    page.wait_for_function("document.querySelector('#digit').textContent !== '?'")


@pytest.mark.parametrize("strokes, digit", [(SEVEN, "7"), (ONE, "1"), (ZERO, "0")])
def test_drawn_digit_is_read_with_ten_bars(page, strokes, digit):
    _draw(page, strokes)
    page.wait_for_timeout(100)
    assert page.locator("#digit").text_content() == digit
    widths = page.locator(".bar > div").evaluate_all("bars => bars.map(b => parseFloat(b.style.width))")
    assert len(widths) == 10 and abs(sum(widths) - 100) < 1 and max(widths) == widths[int(digit)]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"draw-{digit}.png"))


def test_the_page_names_the_model_it_serves(page, trained):
    """A class may be shown two models side by side: each page says which one reads the digits."""
    import json

    accuracy = json.loads((trained[1] / "metrics.json").read_text())["test_accuracy"]
    page.wait_for_function("document.querySelector('#model').textContent !== ''")
    assert (
        page.locator("#model").text_content()
        == f"model: classic · {100 * accuracy:.2f}% on MNIST's test digits"
    )


def test_clear_resets_the_page(page):
    _draw(page, ONE)
    page.click("#clear")
    assert page.locator("#digit").text_content() == "?"


def test_a_photo_chosen_in_the_page_is_sent_as_multipart_and_read(page, mnist, tmp_path):
    from test_predict import _png, _render

    (_, _), (x_test, _) = mnist
    photo = tmp_path / "seven.png"
    photo.write_bytes(_png(_render(x_test[0])))  # black on white, as a photo of paper
    page.click("#clear")
    with page.expect_request("**/api/predict") as sent:
        page.set_input_files("#file", str(photo))
    assert sent.value.headers["content-type"].startswith("multipart/form-data")
    page.wait_for_function("document.querySelector('#digit').textContent !== '?'")
    assert page.locator("#digit").text_content() == "7"


def test_a_photo_of_blank_paper_reads_no_digit(page, tmp_path):
    """It showed the model's guess at an all-black 28x28 as the answer (a 5), the note below it."""
    from test_predict import _png

    photo = tmp_path / "blank.png"
    photo.write_bytes(_png(np.full((60, 80), 250, np.uint8)))
    page.click("#clear")
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.querySelector('#digit').textContent !== '?'")
    assert page.locator("#digit").text_content() == "–"
    assert page.locator("#note").text_content().startswith("no digit found")
    assert page.locator(".bar.best").count() == 0


@pytest.mark.parametrize(
    "font, digit, slant", [("futural", 4, 0.25), ("scripts", 2, 0.0), ("rowmant", 8, -0.25)]
)
def test_the_pen_set_is_what_the_page_draws(page, font, digit, slant):
    """`evaluate --on pen` claims its digits are the PNG the page would send: the same strokes drawn here with
    the mouse must leave the page's own canvas reading as the same 28x28 (its pen, its anti-aliasing)."""
    strokes = otherdigits.pen_strokes(font, digit, 0.7, slant)
    _draw(page, strokes, steps=1)
    url = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    canvas = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L")
    ours = otherdigits.draw(strokes)
    assert canvas.size == ours.size == (otherdigits.PAD, otherdigits.PAD)
    seen, read = (to_mnist(np.asarray(image, np.float32))[0].astype(float) for image in (canvas, ours))
    # Measured: 0.8-1.4 gray levels (of 255) apart on average; the same strokes with a pen 2 px thinner or
    # thicker than the page's are 2.0-2.6 apart, 4 px 4-11.
    assert np.abs(seen - read).mean() < 1.8


def test_a_phone_sized_photo_is_shrunk_in_the_page_and_read(page, mnist, tmp_path):
    """A phone's photo is 3-5 MB, over the API's 2 MB: the page sends it 1024 px wide instead of a 413."""
    from test_predict import _render

    (_, _), (x_test, _) = mnist
    rng = np.random.default_rng(0)
    paper = np.asarray(
        Image.fromarray(_render(x_test[0], canvas=300, size=180, top=60, left=60)).resize((2400, 2400))
    )
    photo = tmp_path / "phone.png"
    Image.fromarray(np.clip(paper + rng.normal(0, 8, paper.shape), 0, 255).astype(np.uint8)).save(photo)
    assert photo.stat().st_size > 2 * 2**20
    page.click("#clear")
    with page.expect_response("**/api/predict") as answered:
        page.set_input_files("#file", str(photo))
    assert answered.value.status == 200  # sent whole, it was 413: over 2 MB
    page.wait_for_function("document.querySelector('#digit').textContent !== '?'")
    assert page.locator("#digit").text_content() == "7"


def _held_predictions(page):
    """Requests to the API held unanswered until the test lets them go (route.continue_())."""
    held = []
    page.route("**/api/predict", lambda route: held.append(route))
    return held


def _press(page, stroke):
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
    page.mouse.down()
    for x, y in stroke[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()


def test_an_answer_to_a_drawing_since_cleared_is_not_shown(page):
    page.click("#clear")
    held = _held_predictions(page)
    try:
        _press(page, SEVEN[0])
        while not held:
            page.wait_for_timeout(20)
        page.click("#clear")
        with page.expect_response("**/api/predict"):
            held[0].continue_()
        page.wait_for_timeout(200)
        assert page.locator("#digit").text_content() == "?"  # the 7's answer came, for a pad now blank
    finally:
        page.unroute("**/api/predict")


@pytest.mark.parametrize(
    "failure, note",
    [
        (lambda route: route.abort(), "cannot reach the server"),
        (
            lambda route: route.fulfill(status=502, body="Bad Gateway", content_type="text/plain"),
            "the server answered 502",
        ),
    ],
    ids=["unreachable", "not JSON"],
)
def test_a_failed_request_says_so_and_clears_the_last_answer(page, failure, note):
    _draw(page, ONE)
    assert page.locator("#digit").text_content() == "1"
    page.route("**/api/predict", failure)
    try:
        _press(page, SEVEN[0])
        page.wait_for_function(f"document.querySelector('#note').textContent.includes({note!r})")
        assert page.locator("#digit").text_content() == "?"
        assert page.locator(".bar > div").evaluate_all("bars => bars.every(b => b.style.width === '0px')")
    finally:
        page.unroute("**/api/predict")


def test_a_second_finger_neither_draws_nor_asks(page, server):
    """One finger draws a bar across the top while a second rests on the pad's corner and lifts first."""
    context = page.context.browser.new_context(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    try:
        phone = context.new_page()
        phone.goto(server)
        asked = []
        phone.on("request", lambda request: asked.append(request) if "api/predict" in request.url else None)
        cdp = context.new_cdp_session(phone)
        box = phone.locator("#pad").bounding_box()

        def touch(kind, *points):
            cdp.send(
                "Input.dispatchTouchEvent",
                {
                    "type": kind,
                    "touchPoints": [{"x": box["x"] + x, "y": box["y"] + y, "id": i} for i, (x, y) in points],
                },
            )

        touch("touchStart", (0, (60, 60)))
        touch("touchMove", (0, (100, 60)))
        touch("touchStart", (0, (100, 60)), (1, (250, 250)))
        touch("touchMove", (0, (160, 60)), (1, (250, 250)))
        # The second finger lifts (CDP lists the points that end): no question
        touch("touchEnd", (1, (250, 250)))
        phone.wait_for_timeout(300)
        assert asked == []
        with phone.expect_response("**/api/predict"):
            touch("touchMove", (0, (220, 60)))
            touch("touchEnd", (0, (220, 60)))
        ink = phone.evaluate("""() => { const d = document.getElementById('pad').getContext('2d')
            .getImageData(0, 0, 280, 280).data; return [d[4 * (60 * 280 + 200)], d[4 * (250 * 280 + 250)],
            d[4 * (155 * 280 + 175)]]; }""")
        # The bar drawn; no ink at the resting finger or between
        assert ink[0] == 255 and ink[1] == 0 and ink[2] == 0
        assert len(asked) == 1
    finally:
        context.close()
