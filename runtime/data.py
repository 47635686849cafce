"""Realistic inputs (SPEC section 2): image data sets, their preprocessing, empirical spectrum.

Loaders return raw samples as float arrays (N, D), one flattened grayscale image or patch a row,
and read local files only (nothing is downloaded):

* `sklearn_patches`: square grayscale patches cut at random positions from the photographs
  scikit-learn ships (`sklearn.datasets.load_sample_images`); works offline, the default;
* `cifar10`: the python version of CIFAR-10 (`data_batch_1..5`, `test_batch`: pickled dicts
  with b"data" of shape (10000, 3072) uint8, the R, G, B planes of 32 x 32 images);
* `idx_images`: MNIST / FashionMNIST IDX files (`train-images-idx3-ubyte`, optionally `.gz`);
* `npy`: any `.npy` array of samples (N, ...), flattened per sample.

Colour images become grayscale with the ITU-R 601-2 luma weights 0.299 R + 0.587 G + 0.114 B,
as torchvision's `transforms.Grayscale` (PIL's convert("L")) which Refinetti & Goldt (ICML 2022)
used for their grayscale CIFAR-10.

`prepare` centres the samples (per-pixel mean of the training rows), rescales them to unit
average variance (trace(Omega)/D = 1) and diagonalises the empirical covariance
Omega = X^T X / N of the training rows, i.e. the covariance of the distribution that draws a
training row uniformly at random (SPEC section 2). The eigen-decomposition is cached on disk,
keyed by a content hash of the preprocessed training samples.
"""
import gzip
import hashlib
import os
import pickle
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.spectrum import eigenvalues

#: luma weights of ITU-R 601-2 (PIL convert("L"), torchvision Grayscale)
LUMA = np.array([0.299, 0.587, 0.114])
#: environment variable overriding the default cache directory
CACHE_ENV = "AE_DYNAMICS_CACHE"
DEFAULT_CACHE = Path("~/.cache/ae-dynamics")
KINDS = ("sklearn", "cifar10", "mnist", "npy")


@dataclass(frozen=True)
class Dataset:
    """Preprocessed samples and the eigen-decomposition of their covariance.

    samples (N, D): training rows, centred, unit average variance; test (M, D): held-out rows
    preprocessed with the training mean and scale (M may be 0); eigvals (D,), eigvecs (D, D):
    numpy.linalg.eigh of Omega = samples^T samples / N (ascending, columns orthonormal);
    mean (D,), scale: the preprocessing x -> (x - mean) / scale; key: the content hash.
    """
    name: str
    samples: np.ndarray
    test: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    mean: np.ndarray
    scale: float
    key: str

    @property
    def D(self):
        return self.samples.shape[1]


# -- loaders ---------------------------------------------------------------------------------

def grayscale(rgb):
    """0.299 R + 0.587 G + 0.114 B over the last axis (length 3)."""
    rgb = np.asarray(rgb, dtype=float)
    if rgb.shape[-1] != 3:
        raise ValueError(f"grayscale needs a trailing axis of 3 colour channels, got shape {rgb.shape}")
    return rgb @ LUMA


def sklearn_patches(size=32, n=25000, seed=0):
    """n grayscale size x size patches (n, size^2), values in [0, 1], from the photographs of
    sklearn.datasets.load_sample_images: each patch picks an image uniformly, then a
    top-left corner uniformly; deterministic for a seed."""
    size, n = _count(size, "size"), _count(n, "n")
    from sklearn.datasets import load_sample_images
    images = [grayscale(im) / 255.0 for im in load_sample_images().images]
    if any(size > min(im.shape) for im in images):
        raise ValueError(f"patch size {size} exceeds the smallest sample image side "
                         f"{min(min(im.shape) for im in images)}")
    rng = np.random.default_rng(seed)
    which = rng.integers(len(images), size=n)
    out = np.empty((n, size * size))
    for i, im in enumerate(images):
        rows = np.flatnonzero(which == i)
        r = rng.integers(im.shape[0] - size + 1, size=rows.size)
        c = rng.integers(im.shape[1] - size + 1, size=rows.size)
        win = np.lib.stride_tricks.sliding_window_view(im, (size, size))
        out[rows] = win[r, c].reshape(rows.size, -1)
    return out


def cifar10(path):
    """CIFAR-10 in its python format from directory `path`: (train, test), grayscale (N, 1024).
    train stacks data_batch_1, data_batch_2, ... (at least one is required); test is test_batch,
    or None if that file is absent. The batches are pickles; they are read by `_BatchUnpickler`,
    which builds only what those files hold, so a crafted file raises ValueError, not code."""
    path = _directory(path, "CIFAR-10 (python version)")
    batches = sorted(path.glob("data_batch_*"), key=lambda p: p.name)
    if not batches:
        raise FileNotFoundError(f"no CIFAR-10 training batches in {path}: expected files data_batch_1 ... "
                                f"data_batch_5 (and test_batch) of the python version of CIFAR-10")
    train = np.concatenate([_cifar_batch(p) for p in batches])
    test = path / "test_batch"
    return train, (_cifar_batch(test) if test.exists() else None)


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10's python batches: dicts, lists, bytes, str, numbers and numpy
    arrays. Any other global (a function or class a malicious pickle would call) is refused."""

    _NUMPY = {("numpy", "ndarray"), ("numpy", "dtype"),
              ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self._NUMPY:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):       # bytes in protocol-2 pickles from Python 3
            return _latin1
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a CIFAR-10 batch holds "
                                     f"only dicts, lists, bytes, str and numpy arrays")


def _latin1(text, encoding):
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _cifar_batch(file):
    try:
        with open(file, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as exc:
        raise ValueError(f"{file}: not a CIFAR-10 python batch (a pickled dict), could not unpickle: {exc}") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if data is None:
        raise ValueError(f"{file}: not a CIFAR-10 python batch: expected a dict with key b'data'")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise ValueError(f"{file}: CIFAR-10 b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    return grayscale(data.reshape(-1, 3, 32 * 32).transpose(0, 2, 1)) / 255.0


#: IDX type codes (the third byte of the magic number)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_TRAIN = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte")


def idx_images(path):
    """MNIST / FashionMNIST images (train, test) as (N, rows*cols), values / 255 for uint8.
    `path` is an IDX file (plain or gzip) or a directory holding train-images-idx3-ubyte
    (required) and t10k-images-idx3-ubyte (optional, else test is None), each plain or .gz."""
    path = Path(path).expanduser()
    if path.is_file():
        return read_idx(path), None
    path = _directory(path, "MNIST / FashionMNIST IDX files")
    train = _first(path, _IDX_TRAIN)
    if train is None:
        raise FileNotFoundError(f"no IDX training images in {path}: expected train-images-idx3-ubyte "
                                f"(or train-images-idx3-ubyte.gz), and optionally t10k-images-idx3-ubyte")
    test = _first(path, _IDX_TEST)
    return read_idx(train), (None if test is None else read_idx(test))


def read_idx(file):
    """One IDX array (gzip detected by its magic bytes) of rank >= 2, flattened to (N, -1)."""
    file = Path(file)
    with open(file, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{file}: corrupt gzip stream: {exc}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{file}: not an IDX file (expected magic bytes 00 00 <type> <rank>, got {raw[:4].hex(' ')})")
    rank = raw[3]
    if rank < 2 or len(raw) < 4 + 4 * rank:
        raise ValueError(f"{file}: IDX images need rank >= 2 and a complete header, got rank {rank}")
    dims = struct.unpack(f">{rank}I", raw[4:4 + 4 * rank])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = 4 + 4 * rank + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{file}: IDX header says shape {dims} of {dtype} ({expected} bytes), file has {len(raw)} bytes")
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * rank).reshape(dims[0], -1).astype(float)
    return data / 255.0 if raw[2] == 0x08 else data


def npy(path):
    """Samples from a .npy file: an array (N, ...) flattened to (N, D); (train, None)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no .npy file at {path}: expected a numpy array of samples (N, D)")
    try:
        X = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npy array of samples: {exc}") from None
    if X.ndim < 2 or not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"{path}: expected a real numeric array of samples (N, D), got {X.dtype} {X.shape}")
    return X.reshape(X.shape[0], -1).astype(float), None


def _directory(path, what):
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: no directory {path}")
    return path


def _first(directory, names):
    for name in names:
        for suffix in ("", ".gz"):
            if (directory / (name + suffix)).is_file():
                return directory / (name + suffix)
    return None


def _count(n, what):
    if int(n) != n or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


# -- preprocessing and spectrum ----------------------------------------------------------------

def cache_dir(directory=None):
    """The cache directory: `directory`, else $AE_DYNAMICS_CACHE, else ~/.cache/ae-dynamics."""
    return Path(directory or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def content_key(X):
    """sha256 of an array's dtype, shape and bytes (C order)."""
    X = np.ascontiguousarray(X)
    h = hashlib.sha256(f"{X.dtype.str}{X.shape}".encode())
    h.update(X.data)
    return h.hexdigest()


def spectrum(X, cache=None):
    """eigh of Omega = X^T X / N for samples X (N, D): (eigvals, eigvecs, key). With a cache
    directory (a path, or True for cache_dir()), read `<key>.npz` there if present, else
    compute and write it (atomically); cache=None or False computes without caching."""
    X = _samples(X, "samples")
    if X.shape[0] < 2:
        raise ValueError(f"an empirical covariance needs at least 2 samples, got {X.shape[0]}")
    key = content_key(X)
    file = None if cache in (None, False) else cache_dir(None if cache is True else cache) / f"{key}.npz"
    if file is not None and file.is_file():
        try:
            with np.load(file) as z:
                return _without_rounding(z["eigvals"], X.shape), z["eigvecs"], key
        except Exception:
            pass                                   # unreadable cache entry: recompute, overwrite
    eigvals, eigvecs = np.linalg.eigh(X.T @ X / X.shape[0])
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, eigvals=eigvals, eigvecs=eigvecs)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return _without_rounding(eigvals, X.shape), eigvecs, key


def _without_rounding(eigvals, shape):
    """eigh's eigenvalues of X^T X / N with the round-off of its zero eigenvalues (N samples
    span at most N dimensions of D) set to 0, saying so in a RuntimeWarning; an eigenvalue below
    -runtime.spectrum.ROUNDING x the largest is not round-off and raises ValueError."""
    clipped = int(np.sum(eigvals < 0))
    eigvals = eigenvalues(eigvals, "eigenvalues of the empirical covariance")
    if clipped:
        N, D = shape
        warnings.warn(f"{N} samples in D = {D}: the empirical covariance has {int(np.sum(eigvals == 0))} zero "
                      f"eigenvalues; {clipped} of them came out of eigh slightly negative (round-off) and are set "
                      f"to 0", RuntimeWarning, stacklevel=3)
    return eigvals


def prepare(train, test=None, name="data", test_fraction=0.2, max_samples=None, seed=0, cache=True):
    """Preprocess raw samples into a Dataset (SPEC section 2).

    train (N, D) raw samples; test (M, D) held-out raw samples, or None: then a fraction
    `test_fraction` of the shuffled training rows (seed) is held out. max_samples caps the
    training rows (a seeded random subset). Centring uses the per-pixel mean of the training
    rows, the scale makes the average pixel variance of the training rows 1. cache: see
    `spectrum` (True: the default cache directory).
    """
    X = _samples(train, "training samples")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    if test is None:
        order = rng.permutation(X.shape[0])
        n_test = int(round(test_fraction * X.shape[0]))
        X, test = X[order[n_test:]], X[order[:n_test]]
    else:
        test = _samples(test, "test samples")
        if test.shape[1] != X.shape[1]:
            raise ValueError(f"test samples have D = {test.shape[1]}, training samples D = {X.shape[1]}")
    if max_samples is not None and _count(max_samples, "max_samples") < X.shape[0]:
        X = X[np.sort(rng.choice(X.shape[0], max_samples, replace=False))]
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 training samples, got {X.shape[0]}")
    mean = X.mean(axis=0)
    X = X - mean
    scale = float(np.sqrt(np.mean(X * X)))
    if scale == 0:
        raise ValueError("the training samples are all equal: zero variance, nothing to learn")
    X /= scale
    test = (test - mean) / scale
    eigvals, eigvecs, key = spectrum(X, cache)
    return Dataset(name, X, test, eigvals, eigvecs, mean, scale, key)


def load(kind="sklearn", path=None, *, patch=32, n_patches=25000, test_fraction=0.2, max_samples=None,
         seed=0, cache=True):
    """A preprocessed Dataset: kind "sklearn" (patches of side `patch`, n_patches of them, no
    path), "cifar10" (directory), "mnist" (directory or IDX file) or "npy" (file)."""
    if kind not in KINDS:
        raise ValueError(f"unknown data set kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "sklearn":
        if path is not None:
            raise ValueError("the sklearn patches take no path")
        train, test = sklearn_patches(patch, n_patches, seed), None
        name = f"sklearn sample-image patches {patch}x{patch}"
    else:
        if path is None:
            raise ValueError(f"data set kind {kind!r} needs a path")
        train, test = {"cifar10": cifar10, "mnist": idx_images, "npy": npy}[kind](path)
        name = f"{kind} {Path(path).name}"
    return prepare(train, test, name, test_fraction, max_samples, seed, cache)


def _samples(X, what):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} must have shape (N, D) with N, D >= 1, got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contain NaN or inf")
    return X
