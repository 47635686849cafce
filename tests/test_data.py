"""runtime.data: loaders on self-written fixtures in the real formats, preprocessing, the cache."""
import gzip
import pickle
import struct

import numpy as np
import pytest

from runtime import data


# -- fixtures in the real file formats ---------------------------------------------------------

def _rgb_rows(n, seed):
    """n CIFAR rows (n, 3072) uint8: planes R, G, B of 32 x 32 pixels each."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _write_cifar(directory, batches=2, n=5, test=True):
    rows = []
    for b in range(batches):
        x = _rgb_rows(n, b)
        rows.append(x)
        with open(directory / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({b"batch_label": b"training batch", b"labels": [0] * n, b"data": x}, f)
    if test:
        x = _rgb_rows(n, 99)
        with open(directory / "test_batch", "wb") as f:
            pickle.dump({b"labels": [0] * n, b"data": x}, f)
        return np.concatenate(rows), x
    return np.concatenate(rows), None


def _luma(rows):
    """The grayscale of CIFAR rows by hand: 0.299 R + 0.587 G + 0.114 B, scaled to [0, 1]."""
    r, g, b = (rows[:, 1024 * c:1024 * (c + 1)].astype(float) for c in range(3))
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255


def _idx_bytes(images):
    """IDX3 ubyte: magic 00 00 08 03, three big-endian uint32 dims, the pixels."""
    return struct.pack(">4B3I", 0, 0, 8, 3, *images.shape) + images.astype(np.uint8).tobytes()


def _images(n, seed, side=28):
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


# -- CIFAR-10 ------------------------------------------------------------------------------------

def test_cifar10_reads_batches_in_order_and_converts_to_grayscale(tmp_path):
    train_rows, test_rows = _write_cifar(tmp_path, batches=2, n=5)
    train, test = data.cifar10(tmp_path)
    assert train.shape == (10, 1024) and test.shape == (5, 1024)
    assert np.allclose(train, _luma(train_rows), rtol=0, atol=1e-12)
    assert np.allclose(test, _luma(test_rows), rtol=0, atol=1e-12)


def test_cifar10_single_colour_pixels_follow_the_luma_weights(tmp_path):
    rows = np.zeros((3, 3072), dtype=np.uint8)
    for c in range(3):
        rows[c, 1024 * c + 7] = 255                  # pixel 7 pure red, green, blue
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": rows}, f)
    train, test = data.cifar10(tmp_path)
    assert test is None
    assert np.allclose(train[:, 7], [0.299, 0.587, 0.114], atol=1e-15)
    assert np.count_nonzero(train) == 3


def test_cifar10_missing_directory_or_batches(tmp_path):
    with pytest.raises(FileNotFoundError, match="no directory"):
        data.cifar10(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.cifar10(tmp_path)


@pytest.mark.parametrize("content, match", [
    (b"this is not a pickle", "could not unpickle"),
    (pickle.dumps({b"labels": [1, 2]}), "key b'data'"),
    (pickle.dumps([1, 2, 3]), "key b'data'"),
    (pickle.dumps({b"data": np.zeros((4, 1024), dtype=np.uint8)}), r"\(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((4, 3072))}), "uint8"),
])
def test_cifar10_malformed_batch(tmp_path, content, match):
    (tmp_path / "data_batch_1").write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        data.cifar10(tmp_path)
    assert "data_batch_1" in str(info.value)


class _RunsCode:
    """Unpickling this calls builtins.exec: the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path, protocol):
    marker = tmp_path / "marker"
    payload = {b"data": _rgb_rows(2, 0), b"labels": [_RunsCode(marker)]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=protocol))
    assert b"exec" in (tmp_path / "data_batch_1").read_bytes()      # the payload is really there
    with pytest.raises(ValueError, match=r"refusing to load global \w+\.exec") as info:
        data.cifar10(tmp_path)
    assert "data_batch_1" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_cifar10_reads_batches_of_every_pickle_protocol(tmp_path, protocol):
    """The real batches are Python 2 pickles (protocol 2); numpy writes other globals for each
    protocol (_codecs.encode, _reconstruct, _frombuffer): all are what the safe loader accepts."""
    rows = _rgb_rows(3, 1)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4], b"data": rows,
             b"filenames": [b"a.png", b"b.png", b"c.png"], "str key": "str"}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    train, _ = data.cifar10(tmp_path)
    assert np.allclose(train, _luma(rows), rtol=0, atol=1e-12)


# -- IDX (MNIST / FashionMNIST) ------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_plain_and_gzip(tmp_path, compress):
    tr, te = _images(6, 0), _images(3, 1)
    suffix = ".gz" if compress else ""
    write = gzip.compress if compress else (lambda b: b)
    (tmp_path / f"train-images-idx3-ubyte{suffix}").write_bytes(write(_idx_bytes(tr)))
    (tmp_path / f"t10k-images-idx3-ubyte{suffix}").write_bytes(write(_idx_bytes(te)))
    train, test = data.idx_images(tmp_path)
    assert np.array_equal(train, tr.reshape(6, -1) / 255.0)
    assert np.array_equal(test, te.reshape(3, -1) / 255.0)


def test_idx_single_file_and_missing_test_file(tmp_path):
    tr = _images(4, 2, side=5)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(tr))
    train, test = data.idx_images(tmp_path)
    assert test is None and train.shape == (4, 25)
    train2, _ = data.idx_images(tmp_path / "train-images-idx3-ubyte")
    assert np.array_equal(train, train2)


def test_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.idx_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="no directory"):
        data.idx_images(tmp_path / "absent")


@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n0000", "not an IDX file"),
    (struct.pack(">4BI", 0, 0, 8, 1, 5) + bytes(5), "rank >= 2"),
    (_idx_bytes(_images(3, 0, side=4))[:-1], "file has"),             # truncated
    (_idx_bytes(_images(3, 0, side=4)) + b"\0", "file has"),          # trailing bytes
    (gzip.compress(_idx_bytes(_images(2, 0)))[:-8], "gzip"),          # corrupt gzip
])
def test_idx_malformed(tmp_path, content, match):
    file = tmp_path / "train-images-idx3-ubyte"
    file.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        data.idx_images(tmp_path)
    assert str(file) in str(info.value)


# -- npy -------------------------------------------------------------------------------------------

def test_npy_flattens_samples(tmp_path):
    X = np.random.default_rng(0).normal(size=(7, 3, 4))
    np.save(tmp_path / "x.npy", X)
    train, test = data.npy(tmp_path / "x.npy")
    assert test is None and np.array_equal(train, X.reshape(7, 12))


@pytest.mark.parametrize("array, match", [
    (np.arange(5.0), r"\(N, D\)"),
    (np.array([["a", "b"]]), "numeric"),
    (np.ones((2, 2), dtype=complex), "real"),
])
def test_npy_malformed(tmp_path, array, match):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(ValueError, match=match):
        data.npy(tmp_path / "x.npy")


def test_npy_missing_or_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .npy file"):
        data.npy(tmp_path / "x.npy")
    (tmp_path / "y.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="y.npy"):
        data.npy(tmp_path / "y.npy")
    np.save(tmp_path / "z.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="z.npy"):
        data.npy(tmp_path / "z.npy")


# -- sklearn patches ---------------------------------------------------------------------------

def test_sklearn_patches_are_deterministic_windows_of_the_grayscale_photographs():
    from sklearn.datasets import load_sample_images
    a = data.sklearn_patches(size=6, n=50, seed=3)
    assert a.shape == (50, 36) and np.all((a >= 0) & (a <= 1))
    assert np.array_equal(a, data.sklearn_patches(size=6, n=50, seed=3))
    assert not np.array_equal(a, data.sklearn_patches(size=6, n=50, seed=4))
    images = [(im @ [0.299, 0.587, 0.114]) / 255 for im in load_sample_images().images]
    windows = [np.lib.stride_tricks.sliding_window_view(im, (6, 6)).reshape(-1, 36) for im in images]
    for patch in a[:5]:                                # each patch is some 6 x 6 window
        assert any(np.any(np.all(np.abs(w - patch) < 1e-12, axis=1)) for w in windows)


@pytest.mark.parametrize("kwargs", [dict(size=0), dict(size=1000), dict(n=0), dict(n=2.5)])
def test_sklearn_patches_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        data.sklearn_patches(**kwargs)


# -- preprocessing and spectrum ------------------------------------------------------------------

def _raw(N=300, D=12, seed=0):
    rng = np.random.default_rng(seed)
    return 3.0 + rng.normal(size=(N, D)) @ rng.normal(size=(D, D))


def test_prepare_centres_scales_and_diagonalises(tmp_path):
    raw = _raw()
    ds = data.prepare(raw, test_fraction=0.25, seed=1, cache=tmp_path)
    N, D = ds.samples.shape
    assert (N, D) == (225, 12) and ds.test.shape == (75, 12)
    assert np.allclose(ds.samples.mean(axis=0), 0, atol=1e-12)
    assert np.isclose(np.mean(ds.samples ** 2), 1.0, rtol=1e-12)       # trace(Omega) / D = 1
    assert np.isclose(ds.eigvals.sum() / D, 1.0, rtol=1e-12)
    Omega = ds.samples.T @ ds.samples / N
    assert np.allclose((ds.eigvecs * ds.eigvals) @ ds.eigvecs.T, Omega, atol=1e-12)
    assert np.allclose(ds.eigvecs.T @ ds.eigvecs, np.eye(D), atol=1e-12)
    # train and test rows partition the raw rows, both mapped by the same (x - mean) / scale
    back = np.concatenate([ds.samples, ds.test]) * ds.scale + ds.mean
    assert np.allclose(np.sort(back, axis=0), np.sort(raw, axis=0), atol=1e-10)
    assert np.allclose(ds.mean, (ds.samples * ds.scale + ds.mean).mean(axis=0))


def test_prepare_keeps_a_given_test_set_and_caps_training_rows(tmp_path):
    raw, held = _raw(seed=0), _raw(N=40, seed=5)
    ds = data.prepare(raw, held, max_samples=100, seed=2, cache=None)
    assert ds.samples.shape == (100, 12) and ds.test.shape == (40, 12)
    assert np.allclose(ds.test * ds.scale + ds.mean, held)
    assert np.array_equal(ds.samples, data.prepare(raw, held, max_samples=100, seed=2, cache=None).samples)
    assert not np.array_equal(ds.samples, data.prepare(raw, held, max_samples=100, seed=3, cache=None).samples)


@pytest.mark.parametrize("train, test, kwargs, match", [
    (np.ones(5), None, {}, r"\(N, D\)"),
    (np.full((5, 3), np.nan), None, {}, "NaN"),
    (np.ones((10, 3)), None, {}, "zero variance"),
    (np.eye(3), None, dict(test_fraction=0.9), "at least 2"),
    (np.eye(4), np.eye(3), {}, "D = 3"),
    (np.eye(4), None, dict(test_fraction=1.0), "test_fraction"),
    (np.eye(4), None, dict(max_samples=0), "max_samples"),
])
def test_prepare_bad_input(train, test, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.prepare(train, test, cache=None, **kwargs)


def test_cache_hit_returns_identical_arrays_without_recomputing(tmp_path, monkeypatch):
    X = data.prepare(_raw(N=500, D=40), cache=None).samples
    vals, vecs, key = data.spectrum(X, tmp_path)
    assert (tmp_path / f"{key}.npz").is_file()

    def no_eigh(*args, **kwargs):
        raise AssertionError("eigh called on a cache hit")

    monkeypatch.setattr(np.linalg, "eigh", no_eigh)
    vals2, vecs2, key2 = data.spectrum(X.copy(), tmp_path)
    assert key2 == key and np.array_equal(vals, vals2) and np.array_equal(vecs, vecs2)


def test_cache_invalidates_on_different_content(tmp_path):
    X = data.prepare(_raw(), cache=None).samples
    _, _, key = data.spectrum(X, tmp_path)
    Y = X.copy()
    Y[0, 0] += 1e-9                                     # one number changed
    vals, vecs, key2 = data.spectrum(Y, tmp_path)
    assert key2 != key and len(list(tmp_path.glob("*.npz"))) == 2
    assert np.allclose((vecs * vals) @ vecs.T, Y.T @ Y / Y.shape[0], atol=1e-12)
    assert data.content_key(X.astype(np.float32)) != data.content_key(X)
    assert data.content_key(X.reshape(-1, 6)) != data.content_key(X)


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    X = data.prepare(_raw(), cache=None).samples
    key = data.content_key(X)
    (tmp_path / f"{key}.npz").write_bytes(b"not a zip file")
    vals, vecs, _ = data.spectrum(X, tmp_path)
    assert np.allclose((vecs * vals) @ vecs.T, X.T @ X / X.shape[0], atol=1e-12)
    with np.load(tmp_path / f"{key}.npz") as z:            # overwritten with a good entry
        assert np.array_equal(z["eigvals"], vals)
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_directory_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env"))
    assert data.cache_dir() == tmp_path / "env"
    assert data.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    ds = data.prepare(_raw(), cache=True)
    assert (tmp_path / "env" / f"{ds.key}.npz").is_file()
    monkeypatch.delenv(data.CACHE_ENV)
    assert data.cache_dir() == data.DEFAULT_CACHE.expanduser()


def test_load_dispatches_and_is_deterministic(tmp_path):
    a = data.load("sklearn", patch=8, n_patches=400, seed=7, cache=tmp_path)
    b = data.load("sklearn", patch=8, n_patches=400, seed=7, cache=tmp_path)
    assert a.D == 64 and a.samples.shape == (320, 64) and a.test.shape == (80, 64)
    assert a.key == b.key and np.array_equal(a.samples, b.samples) and np.array_equal(a.eigvecs, b.eigvecs)
    _write_cifar(tmp_path, batches=1, n=4)
    c = data.load("cifar10", tmp_path, cache=None)
    assert c.samples.shape == (4, 1024) and c.test.shape == (4, 1024)
    with pytest.raises(ValueError, match="unknown data set kind"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="needs a path"):
        data.load("npy")
    with pytest.raises(ValueError, match="no path"):
        data.load("sklearn", tmp_path)
