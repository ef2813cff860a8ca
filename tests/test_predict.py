"""Your own handwriting: MNIST-style preprocessing of users' images, and accuracy on re-rendered digits."""

import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from mnist_mlp.cli import main
from mnist_mlp.errors import UserError
from mnist_mlp.predict import open_image, predict_arrays, predict_image, to_mnist


def _centre_of_mass(image):
    """Worked out here from its definition, a reference for predict.to_mnist's (SciPy's)."""
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def _render(digit, canvas=200, size=120, top=40, left=40, dark_ink=True):
    """An MNIST digit as a user's picture: upscaled, on a bigger canvas, black on white by default."""
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR))
    sheet = np.zeros((canvas, canvas), np.uint8)
    sheet[top : top + size, left : left + size] = big
    return 255 - sheet if dark_ink else sheet


def _png(array, **save):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def _forms(digit):
    """The same digit as users produce it, in many forms."""
    white_on_black = _render(digit, dark_ink=False)
    alpha = np.zeros((200, 200, 4), np.uint8)
    alpha[..., 3] = 255 - _render(digit)  # black strokes on a transparent sheet
    upright = Image.fromarray(_render(digit))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° counter-clockwise; viewers rotate it back
    rotated = io.BytesIO()
    upright.rotate(90, expand=True).save(rotated, format="JPEG", exif=exif, quality=95)
    # Dark ink on an opaque page, and parts of it transparent:
    page = Image.fromarray(_render(digit)).convert("RGBA")
    margin = Image.new("RGBA", (240, 240), (0, 0, 0, 0))
    margin.paste(page, (20, 20))  # a transparent margin
    turned = page.rotate(10, expand=True, fillcolor=(0, 0, 0, 0))  # the corners a rotation leaves
    one_pixel = page.copy()
    one_pixel.putpixel((0, 0), (255, 255, 255, 200))  # a single translucent pixel
    cut_out = np.zeros((200, 200, 4), np.uint8)
    cut_out[...] = (30, 60, 200, 0)
    cut_out[..., 3] = _render(digit)  # a blue sheet with the digit cut out of it (its strokes transparent)
    sixteen = _render(digit).astype(np.uint16) * 257
    animated = io.BytesIO()
    first, second = Image.fromarray(_render(digit)).convert("P"), Image.new("P", (200, 200), 0)
    first.save(animated, format="GIF", save_all=True, append_images=[second])  # the digit is frame 0
    return {
        "centred": _png(_render(digit)),
        "off-centre": _png(_render(digit, canvas=300, size=100, top=10, left=190)),
        "small": _png(_render(digit, size=30, top=150, left=20)),
        "large": _png(_render(digit, canvas=600, size=560, top=20, left=20)),
        "white on black": _png(white_on_black),
        "alpha": _png(alpha),
        "transparent margin": _png(np.asarray(margin)),
        "rotated, transparent corners": _png(np.asarray(turned)),
        "one translucent pixel": _png(np.asarray(one_pixel)),
        "cut out of a sheet": _png(cut_out),
        "exif-rotated jpeg": rotated.getvalue(),
        "16-bit": _png(sixteen),
        "palette gif, 2 frames": animated.getvalue(),
        "bmp": _png(_render(digit), format="BMP"),
        "tiff": _png(_render(digit), format="TIFF"),
        "float tiff in 0..1": _png(_render(digit).astype(np.float32) / 255, format="TIFF"),
    }


def test_every_form_comes_out_centred_by_mass_and_reads_the_same(trained, mnist):
    model, _ = trained
    (_, _), (x_test, y_test) = mnist
    for index in (0, 1, 2, 3):  # a 7, a 2, a 1 and a 0
        results = {}
        for form, blob in _forms(x_test[index]).items():
            image, note = to_mnist(open_image(blob, form))
            assert image.shape == (28, 28) and image.dtype == np.uint8 and note == ""
            y, x = _centre_of_mass(image)
            assert abs(y - 14) <= 1 and abs(x - 14) <= 1, (form, y, x)  # where MNIST puts it
            rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
            # Fits MNIST's 20x20 box (+ resampling)
            assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22
            results[form] = predict_image(model, blob, form).digit
        assert set(results.values()) == {int(y_test[index])}, results


def test_re_rendered_test_digits_keep_their_accuracy_and_plain_resize_does_not(trained, mnist):
    model, _ = trained
    (_, _), (x_test, y_test) = mnist
    rng = np.random.default_rng(0)
    n = 1500
    ours, plain = [], []
    for digit in x_test[:n]:
        size = int(rng.integers(60, 150))
        top, left = (int(v) for v in rng.integers(5, 200 - size - 5, size=2))
        picture = _render(digit, canvas=200, size=size, top=top, left=left)
        ours.append(to_mnist(picture.astype(np.float32))[0])
        naive = np.asarray(Image.fromarray(picture).resize((28, 28), Image.Resampling.BILINEAR))
        plain.append(255 - naive)  # a plain resize, even given the inversion to white on black
    original = np.mean([p.digit for p in predict_arrays(model, list(x_test[:n]))] == y_test[:n])
    ours_accuracy = np.mean([p.digit for p in predict_arrays(model, ours)] == y_test[:n])
    plain_accuracy = np.mean([p.digit for p in predict_arrays(model, plain)] == y_test[:n])
    print(
        f"accuracy on {n} test digits: original {original:.4f}, re-rendered + ours {ours_accuracy:.4f}, "
        f"re-rendered + plain resize {plain_accuracy:.4f}"
    )
    assert ours_accuracy >= original - 0.01
    assert plain_accuracy < ours_accuracy - 0.2


def test_blank_and_block_images_are_flagged(trained):
    model, _ = trained
    blank = predict_image(model, _png(np.full((50, 50), 255, np.uint8)))
    assert blank.unsure and "blank" in blank.reason
    block = np.full((100, 100), 255, np.uint8)
    block[20:80, 20:80] = 0
    assert "one solid blot: this does not look like a digit" in predict_image(model, _png(block)).reason


def test_the_predict_command_prints_no_digit_for_blank_paper(trained, tmp_path, capsys):
    """It printed the model's guess at an all-black 28x28 (`blank.png: 5   [5: 14.5%, ...]`), flagged."""
    (tmp_path / "blank.png").write_bytes(_png(np.full((50, 50), 255, np.uint8)))
    assert main(["predict", str(trained[1]), str(tmp_path / "blank.png")]) == 0
    assert (
        capsys.readouterr().out.strip()
        == f"{tmp_path / 'blank.png'}: no digit found: the image is blank or its "
        "marks are too faint"
    )


def test_csv_replaces_only_a_csv_that_predict_wrote(trained, tmp_path, capsys, monkeypatch):
    """--csv run/model.keras replaced the model with 162 bytes of CSV (rc 0), as it did any file of the
    user's; now refused before Keras starts. A link is not replaced by a file either; an empty file is."""
    from mnist_mlp import cli

    _, run = trained
    image = tmp_path / "blank.png"
    image.write_bytes(_png(np.full((50, 50), 255, np.uint8)))
    model = (run / "model.keras").read_bytes()
    (tmp_path / "link.csv").symlink_to(tmp_path / "out.csv")
    with monkeypatch.context() as patch:
        patch.setattr(cli, "use_backend", lambda *a: pytest.fail("Keras started before --csv was checked"))
        for theirs in (run / "model.keras", tmp_path / "marks.csv", tmp_path / "link.csv"):
            if theirs.name == "marks.csv":
                theirs.write_text("name,mark\nada,19\n")
            assert main(["predict", str(run), str(image), "--csv", str(theirs)]) == 2
            assert "is not a CSV that predict wrote" in capsys.readouterr().err
    assert (tmp_path / "link.csv").is_symlink()
    (tmp_path / "empty.csv").touch()
    assert main(["predict", str(run), str(image), "--csv", str(tmp_path / "empty.csv")]) == 0
    assert (run / "model.keras").read_bytes() == model and (
        tmp_path / "marks.csv"
    ).read_text() == "name,mark\nada,19\n"
    out = tmp_path / "out.csv"
    for _ in range(2):  # a new file, and then one predict wrote
        assert main(["predict", str(run), str(image), "--csv", str(out)]) == 0
        rows = out.read_text().splitlines()
        assert (
            rows[0].endswith(",p9,reason")
            and rows[1].endswith(",no digit found: the image is blank or its marks are too faint")
            and len(rows) == 2
        )


def test_a_small_digit_is_said_to_be_too_small_not_faint(trained):
    page = np.full((400, 600), 255, np.uint8)
    page[100:113, 200:208] = 0  # solid ink, 13 px of a 600 px side
    found = predict_image(trained[0], _png(page))
    assert found.unsure and "too small" in found.reason and "crop closer" in found.reason


def test_a_48_megapixel_phone_jpeg_is_read_at_a_reduced_scale(trained, mnist):
    (_, _), (x_test, _) = mnist
    page = Image.fromarray(_render(x_test[0], canvas=600, size=400, top=100, left=100)).resize((8064, 6048))
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=80)  # more pixels than MAX_PIXELS, decoded at 1/4 scale
    assert predict_image(trained[0], buffer.getvalue(), "phone.jpg").digit == 7


def test_bad_images_are_user_errors():
    with pytest.raises(UserError, match="not a readable image"):
        open_image(b"this is not an image", "upload")
    with pytest.raises(UserError, match="not a readable image"):
        open_image(_png(np.zeros((30, 30), np.uint8))[:40], "upload")  # truncated PNG
    with pytest.raises(UserError, match="more than"):
        open_image(_png(np.zeros((6000, 6000), np.uint8), optimize=False), "upload")
    with pytest.raises(UserError, match="784"):
        open_image(np.zeros((3, 5, 7)), "pixels")


def test_predict_command(trained, mnist, tmp_path, capsys):
    _, run = trained
    (_, _), (x_test, _) = mnist
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "seven.png").write_bytes(_forms(x_test[0])["off-centre"])
    (folder / "two.jpg").write_bytes(_png(_render(x_test[1]), format="JPEG"))
    (folder / "notes.txt").write_text("ignored: not an image")
    assert main(["predict", str(run), str(folder), "--show", "--csv", str(tmp_path / "out.csv")]) == 0
    out = capsys.readouterr().out
    assert "seven.png: 7   [7: " in out and "two.jpg: 2   [2: " in out
    assert out.count("\n") >= 2 * 28 + 2  # --show prints each 28x28
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert rows[0].startswith("file,digit,unsure,p0") and len(rows) == 3
    assert main(["predict", str(run), str(folder / "seven.png"), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)[0]["digit"] == 7
    (tmp_path / "bad.png").write_bytes(b"garbage")
    assert main(["predict", str(run), str(tmp_path / "bad.png")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    # One bad file in the folder: the others still read
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    assert main(["predict", str(run), str(folder), "--csv", str(tmp_path / "out.csv")]) == 2
    out, err = capsys.readouterr()
    rows = (tmp_path / "out.csv").read_text().splitlines()
    # And a row for the file not read:
    assert "seven.png: 7" in out and "two.jpg: 2" in out and len(rows) == 4
    broken = next(csv.reader(rows[-1:]))
    assert broken[:3] == [str(folder / "broken.png"), "", "1"] and broken[-1].endswith(
        "save it again as PNG or JPEG"
    )
    assert err.count("\n") == 2 and "broken.png is not a readable image" in err and "skipped" in err
    assert (
        f"note: {folder}: left out notes.txt (not PNG, JPEG, BMP, GIF, TIFF or WebP: save photos as JPEG)"
        in err
    )
    os.mkfifo(tmp_path / "pipe.png")  # opening it would wait for a writer forever
    assert main(["predict", str(run), str(tmp_path / "pipe.png")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_a_drawing_that_touches_the_pads_edge_is_read_as_a_canvas():
    """A big digit drawn on the page reaches the pad's edge; its background is still one exact level, so it is
    read as the same digit with black added around it (no lighting fit: that took ~20x as long and rang)."""
    from PIL import ImageDraw

    from mnist_mlp import predict

    pad = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(pad).ellipse((0, 0, 279, 279), outline=255, width=18)  # a 0 touching all four edges
    touching = np.asarray(pad, np.float32)
    assert predict._ink(touching)[1] == 0  # the canvas path: no noise estimated, nothing fitted
    assert np.array_equal(to_mnist(touching)[0], to_mnist(np.pad(touching, 20))[0])
    paper = np.full((800, 600), 255.0)  # a scan whose white paper clips to 255, a shadow along its left edge
    paper[:, :100] -= np.linspace(65, 0, 100)[None, :]
    paper[200:260, 150:450] = paper[200:600, 380:440] = 30.0  # a dark 7
    # The shadow is fainter than the ink: not a canvas, the lighting is fitted
    assert predict._ink(paper)[1] > 0
    assert to_mnist(paper)[0][:, :3].max() < 60  # and no shadow bar left of the 7


def test_a_blank_page_has_no_digit_in_the_csv_or_json(trained, tmp_path, capsys):
    """The terminal said "no digit found", but the CSV row read `blank.png,5,1,...`: a spreadsheet counted a
    5."""
    _, run = trained
    Image.new("L", (60, 60), 255).save(tmp_path / "blank.png")
    assert main(["predict", str(run), str(tmp_path / "blank.png"), "--csv", str(tmp_path / "out.csv")]) == 0
    assert "no digit found" in capsys.readouterr().out
    row = next(csv.DictReader((tmp_path / "out.csv").open()))
    assert row["digit"] == "" and row["unsure"] == "1" and "no digit found" in row["reason"]
    assert main(["predict", str(run), str(tmp_path / "blank.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digit"] is None


def test_a_damaged_tiff_is_one_line_without_libtiffs_own(trained, tmp_path, capfd):
    """libtiff wrote "tempfile.tif: Using code not yet in table." to the terminal before our error."""
    from mnist_mlp.cli import main

    image = Image.fromarray((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8))
    image.save(tmp_path / "ok.tif", compression="tiff_lzw")
    damaged = bytearray((tmp_path / "ok.tif").read_bytes())
    for i in range(200, 2000, 7):  # scramble the LZW codes
        damaged[i] = (damaged[i] * 31 + 7) % 256
    (tmp_path / "bad.tif").write_bytes(bytes(damaged))
    assert main(["predict", str(trained[1]), str(tmp_path / "bad.tif")]) == 2
    err = capfd.readouterr().err  # the file descriptor: what a C library writes too
    assert err.count("\n") == 1 and "bad.tif is not a readable image" in err, err
