"""The unsure flag on a small set built here: photos of blank paper (uneven lighting, sensor noise, JPEG,
dust), digits on the same paper with thin and thick strokes, and straight 1s drawn at every width."""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mnist_mlp.predict import predict_image, to_mnist

N_BLANK, N_DIGITS, N_ONES = 40, 60, 24
NO_DIGIT = "no digit found"  # the start of the reason for a blank or near-blank image
BLOT = "the ink is one solid blot: this does not look like a digit"


def _paper(rng, height, width):
    """A photo of blank paper, float (h, w) 0..255: a lamp's gradient, vignetting, sensor noise."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    level = rng.uniform(110, 235)  # dim room .. daylight
    gradient = rng.uniform(10, 70) * ((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle))
    vignette = rng.uniform(0, 50) * ((x - x.mean()) ** 2 + (y - y.mean()) ** 2) * 2
    return level + gradient - vignette + rng.normal(0, rng.uniform(2, 10), (height, width))


def _photo(rng, gray):
    """Clipped to 8 bits; half of them JPEG-compressed as a phone would."""
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 95)))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_photos(seed=0):
    rng = np.random.default_rng(seed)
    photos = []
    for i in range(N_BLANK):
        height, width = (int(v) for v in rng.integers(240, 900, size=2))
        paper = _paper(rng, height, width)
        if i % 4 == 3:  # near-blank: a few specks of dust
            for _ in range(int(rng.integers(1, 4))):
                y, x = int(rng.integers(0, height - 4)), int(rng.integers(0, width - 4))
                paper[y : y + 3, x : x + 3] -= rng.uniform(30, 60)
        photos.append(_photo(rng, paper))
    return photos


def digit_photos(x_test, y_test, seed=1):
    """MNIST test digits written on photographed paper: (bytes, label, stroke) with thin, MNIST-like
    and thick strokes."""
    rng = np.random.default_rng(seed)
    photos = []
    for i in range(N_DIGITS):
        index = 1000 + i
        height, width = (int(v) for v in rng.integers(240, 700, size=2))
        size = int(min(height, width) * rng.uniform(0.35, 0.8))
        stroke = ("thin", "plain", "thick")[i % 3]
        digit = Image.fromarray(x_test[index]).resize((size, size), Image.Resampling.BILINEAR)
        k = max(3, size // 28 * 2 + 1)  # odd filter size: about one MNIST pixel at this scale
        if stroke == "thin":
            digit = digit.filter(ImageFilter.MinFilter(k))
        elif stroke == "thick":
            digit = digit.filter(ImageFilter.MaxFilter(k))
        ink = np.zeros((height, width))
        top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
        ink[top : top + size, left : left + size] = np.asarray(digit) / 255
        paper = _paper(rng, height, width)
        photos.append(
            (_photo(rng, paper - ink * rng.uniform(0.3, 0.8) * np.median(paper)), int(y_test[index]), stroke)
        )
    return photos


def straight_ones(seed=2):
    """A single straight stroke, 2..30 px wide, slightly tilted: on a clean sheet, on a photo, and as
    the page draws it (white on black)."""
    rng = np.random.default_rng(seed)
    ones = []
    for i in range(N_ONES):
        side = int(rng.integers(200, 500))
        width = int(rng.integers(2, 31))
        length, tilt = side * rng.uniform(0.4, 0.8), rng.uniform(-0.15, 0.15)
        x0, y0 = side / 2 - np.sin(tilt) * length / 2, side / 2 - np.cos(tilt) * length / 2
        x1, y1 = side / 2 + np.sin(tilt) * length / 2, side / 2 + np.cos(tilt) * length / 2
        mask = Image.new("L", (side, side), 0)
        ImageDraw.Draw(mask).line([(x0, y0), (x1, y1)], fill=255, width=width)
        ink = np.asarray(mask) / 255
        kind = ("clean", "photo", "page")[i % 3]
        if kind == "clean":
            ones.append(_photo(rng, 255 - 255 * ink))
        elif kind == "photo":
            paper = _paper(rng, side, side)
            ones.append(_photo(rng, paper - ink * rng.uniform(0.3, 0.8) * np.median(paper)))
        else:
            ones.append(_photo(rng, 255 * ink))
    return ones


def test_blank_paper_is_no_digit_and_thin_strokes_are_not_flagged(trained, mnist):
    model, _ = trained
    (_, _), (x_test, y_test) = mnist
    blanks = [predict_image(model, blob, "blank") for blob in blank_photos()]
    digits = [
        (predict_image(model, blob, "digit"), label, stroke)
        for blob, label, stroke in digit_photos(x_test, y_test)
    ]
    ones = [predict_image(model, blob, "one") for blob in straight_ones()]
    blank_flagged = sum(p.reason.startswith(NO_DIGIT) for p in blanks)
    digit_no_digit = sum(p.reason.startswith(NO_DIGIT) for p, _, _ in digits)
    digit_read = sum(p.digit == label for p, label, _ in digits)
    digit_flagged = sum(p.unsure for p, _, _ in digits)
    ones_flagged = sum(p.unsure for p in ones)
    ones_read = sum(p.digit == 1 for p in ones)
    print(
        f"blank paper flagged 'no digit': {blank_flagged}/{N_BLANK}; digits on paper called 'no digit': "
        f"{digit_no_digit}/{N_DIGITS}, read right {digit_read}/{N_DIGITS}, flagged unsure for any reason "
        f"{digit_flagged}/{N_DIGITS}; straight 1s flagged {ones_flagged}/{N_ONES}, read as 1 "
        f"{ones_read}/{N_ONES}"
    )
    for stroke in ("thin", "plain", "thick"):
        group = [(p, label) for p, label, s in digits if s == stroke]
        print(
            f"  {stroke}: read right {sum(p.digit == label for p, label in group)}/{len(group)}, "
            f"'no digit' {sum(p.reason.startswith(NO_DIGIT) for p, _ in group)}/{len(group)}"
        )
    assert blank_flagged == N_BLANK
    assert digit_no_digit <= 2  # faint thinned strokes on noisy paper; see the rates printed
    assert digit_read >= 0.9 * N_DIGITS
    assert ones_flagged == 0 and ones_read >= N_ONES - 1


def blots(seed=3):
    """A disc, oval or square of ink, 5 to 120 px across, drawn on the page (white on black) or on a clean
    sheet: no digit, yet a disc was read as a confident 8 (67%, not flagged). (On a photo of paper its edges
    fade into the lighting fit and it fills less of its box, ~0.6-0.75, as a heavy MNIST digit can: those are
    not flagged.)"""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(24):
        side = int(rng.integers(200, 500))
        across = int(rng.integers(12, 121))
        tall = int(across * rng.uniform(0.5, 1.0))
        box = (side / 2 - across / 2, side / 2 - tall / 2, side / 2 + across / 2, side / 2 + tall / 2)
        mask = Image.new("L", (side, side), 0)
        (ImageDraw.Draw(mask).rectangle if i % 3 == 2 else ImageDraw.Draw(mask).ellipse)(box, fill=255)
        ink = np.asarray(mask, np.float64)
        found.append(_photo(rng, ink if i % 2 else 255 - ink))
    return found


def test_a_blot_is_flagged_unsure_and_mnists_digits_are_not(trained, mnist):
    (_, _), (x_test, _) = mnist
    flagged = [to_mnist(digit.astype(np.float32))[1] for digit in x_test]
    assert sum(note == BLOT for note in flagged) <= 3  # of 10,000 (2 measured: an 8 and a 3 in heavy ink)
    model, _ = trained
    read = [predict_image(model, blob, "blot") for blob in blots()]
    assert all(p.unsure and p.reason == BLOT for p in read), [p.reason for p in read]
