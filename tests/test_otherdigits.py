"""Digits that are not MNIST's: the printed, handwriting-typeface and pen-drawn sets are what they say, UCI's
handwriting loads, a folder of your own labelled digits is read the way predict reads files, and a model
trained on MNIST reads them all."""

import io
import os
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_mlp import cache, handfonts, imagefiles, otherdigits, predict, sources
from mnist_mlp.cli import main
from mnist_mlp.errors import UserError


@pytest.fixture(scope="module")
def printed():
    return otherdigits.load("fonts")[:2]


def test_the_printed_set_is_every_digit_in_every_font_centred_as_mnist(printed):
    images, labels = printed
    assert len(images) == len(otherdigits.FONTS) * 10 * len(otherdigits.ANGLES) == len(labels)
    assert np.bincount(labels).tolist() == [len(images) // 10] * 10
    stack = np.stack(images).astype(np.float64)
    assert stack.shape[1:] == (28, 28) and stack.max() == 255
    # Ink in every image: no font lacked a digit
    assert np.all(stack.reshape(len(images), -1).max(axis=1) > 0)
    rows, cols = stack.any(axis=2), stack.any(axis=1)
    # Fitted to 20x20 as MNIST's (+1: smoothing)
    assert max(rows.sum(axis=1).max(), cols.sum(axis=1).max()) <= 21
    distinct = {image.tobytes() for image in images}
    assert len(distinct) == len(images)


def test_the_pen_set_is_every_digit_in_every_style_drawn_with_the_pages_pen():
    images, labels, *_ = otherdigits.load("pen")
    count = len(otherdigits.PEN_FONTS) * 10 * len(otherdigits.PEN_HEIGHTS) * len(otherdigits.PEN_SLANTS)
    assert len(images) == len(labels) == count and np.bincount(labels).tolist() == [count // 10] * 10
    assert len({image.tobytes() for image in images}) == count  # no two fonts share a design of the digits
    stack = np.stack(images)
    assert stack.reshape(count, -1).max(axis=1).min() == 255
    # Fitted to 20x20
    assert max(stack.any(axis=2).sum(axis=1).max(), stack.any(axis=1).sum(axis=1).max()) <= 21
    for font in otherdigits.PEN_FONTS:  # drawn inside the pad, however leaning
        for slant in otherdigits.PEN_SLANTS:
            points = np.concatenate(otherdigits.pen_strokes(font, 8, max(otherdigits.PEN_HEIGHTS), slant))
            assert points.min() > otherdigits.PEN / 2 and points.max() < otherdigits.PAD - otherdigits.PEN / 2
    tap = np.asarray(otherdigits.draw([[(140.0, 140.0)]]), np.float64) / 255  # one dab: a round pen's disc
    assert (
        tap[140, 140] == 1
        and tap[0, 0] == 0
        and tap.sum() == pytest.approx(np.pi * (otherdigits.PEN / 2) ** 2, rel=0.04)
    )


def _registry(contents: dict[str, bytes], asked: list[list[str]]):
    """A stand-in for `npm pack`: a Fontsource-shaped tarball of each asked family's font file."""

    def npm_pack(specs, folder, timeout=300, npm_cache=None):
        asked.append(specs)
        for spec in specs:
            family = spec.removeprefix("@fontsource/").split("@")[0]
            with tarfile.open(Path(folder) / f"fontsource-{family}-{handfonts.VERSION}.tgz", "w:gz") as tar:
                info = tarfile.TarInfo(f"package/files/{family}-latin-400-normal.woff")
                info.size = len(contents[family])
                tar.addfile(info, io.BytesIO(contents[family]))
        return sorted(Path(folder).glob("*.tgz"))

    return npm_pack


@pytest.fixture
def stand_in_fonts(monkeypatch):
    """Two stand-in typefaces, matplotlib's DejaVu files, pinned by their hashes as handfonts pins its own:
    their bytes by family (what the stand-in registry serves)."""
    from mnist_mlp.plots import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    contents = {
        "sans": (ttf / "DejaVuSans.ttf").read_bytes(),
        "serif": (ttf / "DejaVuSerif.ttf").read_bytes(),
    }
    monkeypatch.setattr(handfonts, "FONTS", {family: cache.sha256(data) for family, data in contents.items()})
    return contents


def test_handfonts_fetch_what_is_missing_or_damaged_and_draw_every_digit_in_each(
    stand_in_fonts, tmp_path, monkeypatch
):
    """Fetched once; a damaged file fetched again; a file that is not the pinned one refused; a folder named
    like a font file said before npm runs, and the advice, followed, works."""
    contents, asked = dict(stand_in_fonts), []
    monkeypatch.setattr(sources, "npm_pack", _registry(contents, asked))
    images, labels, *_ = otherdigits.load("handfonts", tmp_path)
    assert asked == [[f"@fontsource/sans@{handfonts.VERSION}", f"@fontsource/serif@{handfonts.VERSION}"]]
    assert len(images) == 2 * 10 * len(otherdigits.ANGLES) and np.bincount(labels).tolist() == [6] * 10
    assert len({image.tobytes() for image in images}) == len(images)
    fonts = tmp_path / handfonts.FOLDER
    assert otherdigits.load("handfonts", tmp_path)[1].tolist() == labels.tolist() and len(asked) == 1
    (fonts / "serif.woff").write_bytes(b"damaged")
    otherdigits.check("handfonts", tmp_path)
    assert asked[1] == [f"@fontsource/serif@{handfonts.VERSION}"]
    assert (fonts / "serif.woff").read_bytes() == contents["serif"]
    (fonts / "sans.woff").unlink()
    contents["sans"] = contents["serif"]  # the registry serves another file under the name
    with pytest.raises(UserError, match="is not the file pinned by its SHA-256; use --on fonts") as error:
        otherdigits.check("handfonts", tmp_path)
    assert "\n" not in str(error.value) and not (fonts / "sans.woff").exists()
    contents["sans"] = stand_in_fonts["sans"]
    (fonts / "sans.woff").mkdir()
    with pytest.raises(UserError, match=r"sans.woff is a folder where a font file goes: move it out of"):
        otherdigits.check("handfonts", tmp_path)
    assert len(asked) == 3  # npm did not run
    (fonts / "sans.woff").rename(tmp_path / "moved")
    otherdigits.check("handfonts", tmp_path)
    assert (fonts / "sans.woff").read_bytes() == contents["sans"]


def test_handfonts_npm_gets_a_cache_of_its_own_and_its_failures_are_one_line(
    stand_in_fonts, tmp_path, monkeypatch
):
    """npm keeps its downloads in a temporary folder (an npm cache it cannot write would stop it); a tarball
    that is none and a missing npm are one line each."""
    given = []

    def npm_pack(specs, folder, timeout=300, npm_cache=None):
        given.append(npm_cache)
        return _registry(stand_in_fonts, [])(specs, folder)

    monkeypatch.setattr(sources, "npm_pack", npm_pack)
    otherdigits.check("handfonts", tmp_path)
    assert given[0].startswith(tempfile.gettempdir()) and not Path(given[0]).parent.exists()  # removed after
    (tmp_path / handfonts.FOLDER / "sans.woff").unlink()

    def junk(specs, folder, timeout=300, npm_cache=None):
        tarballs = npm_pack(specs, folder)
        tarballs[0].write_bytes(os.urandom(5000))
        return tarballs

    monkeypatch.setattr(sources, "npm_pack", junk)
    with pytest.raises(UserError, match="has no readable package/files/sans-latin-400-normal.woff") as error:
        otherdigits.check("handfonts", tmp_path)
    assert "\n" not in str(error.value)
    monkeypatch.undo()
    monkeypatch.setattr(handfonts, "FONTS", {"sans": cache.sha256(stand_in_fonts["sans"])})
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(
        UserError,
        match=r"with npm: no npm on PATH \(install Node.js\); use --on fonts, pen, uci or FOLDER \(or",
    ):
        otherdigits.check("handfonts", tmp_path)


def test_an_install_without_hershey_fonts_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "HersheyFonts", None)
    with pytest.raises(UserError, match="pip install Hershey-Fonts") as error:
        otherdigits.check("pen")
    assert "\n" not in str(error.value)


def test_uci_handwriting_loads_as_mnist_style_digits():
    pytest.importorskip("sklearn")  # optional: `pip install 'mnist-mlp[uci]'`; the next test runs without it
    images, labels, *_ = otherdigits.load("uci")
    assert len(images) == len(labels) == 1797 and set(labels.tolist()) == set(range(10))
    assert all(image.shape == (28, 28) and image.dtype == np.uint8 and image.max() > 0 for image in images)


def test_8x8_scans_that_fill_their_frame_are_read_as_digits(printed, monkeypatch):
    """UCI's digits fill their 8x8 frame; read bare, predict's reader took them for blank paper (no margin
    to tell paper from ink), so they go on a margin of paper first. Stand-in scans: printed digits at 8x8."""
    images, labels = printed[0][::7], printed[1][::7]
    scans = np.stack(
        [np.asarray(Image.fromarray(image).resize((8, 8), Image.Resampling.BOX)) for image in images]
    )
    scans = scans * 16.0 / scans.max(axis=(1, 2), keepdims=True)  # UCI's 17 levels, the ink at 16
    datasets = types.SimpleNamespace(load_digits=lambda: types.SimpleNamespace(images=scans, target=labels))
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", datasets)
    read, read_labels, *_ = otherdigits.load("uci")
    assert read_labels.tolist() == labels.tolist()
    assert all(image.max() > 100 for image in read)  # every scan read as ink, none as blank paper
    # Scikit-learn missing: one line, what to install
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UserError, match=r"pip install 'mnist-mlp\[uci\]'") as error:
        otherdigits.load("uci")
    # This Python's pip
    assert "\n" not in str(error.value) and f"`{sys.executable} -m pip" in str(error.value)


@pytest.mark.mnist
def test_a_model_trained_on_mnist_reads_printed_digits_and_your_folder(trained, printed, tmp_path, capsys):
    _, run_dir = trained
    before = sorted(run_dir.iterdir())
    assert main(["evaluate", str(run_dir), "--on", "fonts"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("Accuracy on fonts: ")[1].split()[0])
    assert 0.5 < accuracy < 1, out  # far above chance (0.1), and not the test set's score
    assert main(["evaluate", str(run_dir), "--on", "pen"]) == 0
    assert 0.5 < float(capsys.readouterr().out.split("Accuracy on pen: ")[1].split()[0]) < 1
    fonts_cache = tmp_path / "cache"  # the 30 typefaces from npm, as a new user's first --on handfonts
    assert main(["evaluate", str(run_dir), "--on", "handfonts", "--cache-dir", str(fonts_cache)]) == 0
    assert 0.5 < float(capsys.readouterr().out.split("Accuracy on handfonts: ")[1].split()[0]) < 1
    assert (
        len(handfonts.font_files(fonts_cache)) == len(list((fonts_cache / handfonts.FOLDER).iterdir())) == 30
    )
    assert sorted(run_dir.iterdir()) == before  # scoring other digits writes nothing into the run

    images, labels = printed
    for i in range(0, len(images), 29):  # a folder of "your" digits: PNG files under folder/<digit>/
        (tmp_path / "mine" / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - images[i]).save(tmp_path / "mine" / str(labels[i]) / f"{i}.png")  # ink on paper
    assert main(["evaluate", str(run_dir), "--on", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    files = sorted((tmp_path / "mine").glob("*/*.png"))
    wrong = sum(imagefiles.predict_files(trained[0], [f])[0].digit != int(f.parent.name) for f in files)
    assert f"{wrong} of {len(files)} wrong" in out  # the same reading as predict gives, file by file


def test_a_wrong_source_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "iphone" / "3").mkdir(parents=True)
    (tmp_path / "iphone" / "3" / "IMG_0001.HEIC").write_bytes(b"not read")
    for source, expected in (
        (tmp_path / "none", "nor a folder"),
        (tmp_path / "empty", "no subfolders 0 to 9"),
        (
            tmp_path / "iphone",
            "folders 0 to 9 hold no PNG, JPEG, BMP, GIF, TIFF or WebP images; save photos as JPEG",
        ),
    ):
        with pytest.raises(UserError) as error:
            otherdigits.load(str(source))
        assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_folder_skips_hidden_files(tmp_path):
    (tmp_path / "mine" / "7").mkdir(parents=True)
    (tmp_path / "mine" / "7" / "._7.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's metadata twin
    (tmp_path / "mine" / "7" / ".DS_Store").write_bytes(b"\x00")
    seven = np.full((40, 40), 255, np.uint8)
    seven[8:12, 10:30], seven[12:32, 22:26] = 0, 0  # a 7's bar and stem
    Image.fromarray(seven).save(tmp_path / "mine" / "7" / "seven.png")
    images, labels, unread, no_digit = otherdigits.load(str(tmp_path / "mine"))
    assert len(images) == 1 and labels.tolist() == [7] and unread == no_digit == []


def test_a_blank_photo_in_a_class_folder_is_named_not_scored(trained, printed, tmp_path, capsys):
    """A blank photo in 5/ was scored as the model's guess at an empty 28x28: a wrong answer, or a lucky right
    one."""
    images, labels = printed
    mine = tmp_path / "mine"
    for digit in (3, 5):
        (mine / str(digit)).mkdir(parents=True)
        Image.fromarray(255 - images[list(labels).index(digit)]).save(mine / str(digit) / "good.png")
    Image.new("L", (300, 400), 250).save(mine / "5" / "blank.jpg")  # paper, no ink
    speck = np.full((400, 300), 250, np.uint8)
    speck[200:203, 150:153] = 20
    Image.fromarray(speck).save(mine / "3" / "dust.png")
    assert main(["evaluate", str(trained[1]), "--on", str(mine)]) == 0
    out, err = capsys.readouterr()
    assert "of 2 wrong; 2 more with no digit found were not scored" in out
    assert err.splitlines() == [
        f"mnist-mlp: note: {mine / '3' / 'dust.png'}: {predict.SPECKS} (not scored)",
        f"mnist-mlp: note: {mine / '5' / 'blank.jpg'}: {predict.NO_DIGIT} (not scored)",
    ]
    assert sum(int(line.split()[-1]) for line in out.splitlines()[4:14]) == 2  # the images column: 2 scored
    for digit in (3, 5):
        (mine / str(digit) / "good.png").unlink()
    assert main(["evaluate", str(trained[1]), "--on", str(mine)]) == 2  # nothing left to score: one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no digit found in any of {mine}'s 2 readable images" in err


def test_a_class_folder_with_bad_files_scores_the_rest(trained, printed, tmp_path, capsys):
    """One damaged photo stopped evaluate --on FOLDER for the whole class (naming only the first bad file), a
    pipe made it wait forever, and a digit without images read as precision and recall 0."""
    images, labels = printed
    mine = tmp_path / "mine"
    for digit in (3, 4):
        (mine / str(digit)).mkdir(parents=True)
        Image.fromarray(255 - images[list(labels).index(digit)]).save(mine / str(digit) / "good.png")
    (mine / "3" / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (mine / "4" / "broken.png").write_bytes(b"")
    os.mkfifo(mine / "4" / "pipe.png")
    (mine / "4" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert main(["evaluate", str(trained[1]), "--on", str(mine)]) == 2
    out, err = capsys.readouterr()
    assert "of 2 wrong" in out and "\n    0          -                 -       0" in out
    assert err.count("\n") == 3 and "damaged.jpg is not a readable image" in err and "broken.png" in err
    assert f"note: {mine / '4'}: left out gone.png, pipe.png (not plain files)" in err
    assert "open it and save it again as PNG or JPEG" in err and "the other images were scored" in err
    for path in (
        mine / "3" / "IMG_0001.HEIC",
        mine / "three" / "x.png",
        mine / "notes.txt",
        mine / "seven.png",
    ):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not read")
    (mine / "3" / "damaged.jpg").unlink()
    (mine / "4" / "broken.png").unlink()
    assert main(["evaluate", str(trained[1]), "--on", str(mine)]) == 0
    notes = capsys.readouterr().err.splitlines()
    assert (
        notes[:2]
        == [
            f"mnist-mlp: note: {mine}: left out three/ (only folders 0 to 9 are read); seven.png (move "
            f"each into {mine}/<digit>/); notes.txt (not PNG, JPEG, BMP, GIF, TIFF or WebP: save photos "
            f"as JPEG)",
            f"mnist-mlp: note: {mine / '3'}: left out IMG_0001.HEIC (not PNG, JPEG, BMP, "
            "GIF, TIFF or WebP: save photos as JPEG)",
        ]
        and len(notes) == 3
    )
