"""Datasets as uint8 arrays plus a DataSpec: lookup on disk, download as a last resort, splits.

Fashion-MNIST, MNIST and CIFAR-10 are looked up in `data/<name>/`, then where Debian's dataset
packages put them (`/usr/share/datasets/<name>/`), and only then downloaded into `data/<name>/`.
A `folder:PATH` dataset is decoded up front with the same code the service uses, so a corrupt
file stops the run with its name instead of failing mid-epoch inside a tf.data graph.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline import paths
from pipeline.config import DataConfig
from pipeline.errors import DatasetError
from pipeline.preprocess import ImageDecodeError, ImageShape, image_bytes_to_pixels

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
#: Size a folder dataset is resized to when `data.image_size` is not set.
DEFAULT_FOLDER_SIZE = (64, 64)
#: Share of a folder dataset held out as its test set when it has no `test/` sub-folder.
FOLDER_TEST_FRACTION = 0.2

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
#: Where the standard copies are downloaded from (the same as keras.datasets uses).
FASHION_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass(frozen=True)
class DataSpec:
    """What models, training, the registry and the service need to know about a dataset."""

    name: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    #: Per-channel mean and standard deviation of training pixels scaled to [0, 1].
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DataSpec:
        return cls(
            name=str(data["name"]),
            input_shape=tuple(int(v) for v in data["input_shape"]),
            class_names=tuple(str(v) for v in data["class_names"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


@dataclass(frozen=True)
class RawDataset:
    """A dataset as published: training and test images (uint8, N x H x W x C) and labels."""

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @classmethod
    def grayscale(cls, name: str, class_names: tuple[str, ...], arrays) -> RawDataset:
        """From (x_train, y_train, x_test, y_test) with N x H x W images: one channel added."""
        x_train, y_train, x_test, y_test = arrays
        return cls(
            name,
            class_names,
            x_train[..., None],
            y_train.astype(np.int64),
            x_test[..., None],
            y_test.astype(np.int64),
        )


@dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays and the spec computed from the training part."""

    spec: DataSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# --- IDX (MNIST-style) files -------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) of unsigned bytes into an array, checking its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; delete it so it is fetched again") from None
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes; replace it")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated (header); replace it")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(
            f"{path} is corrupt: {len(data) - header} data bytes, expected {expected}; replace it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_dir(folder: str, files: Sequence[str]) -> Path | None:
    """First of data/<folder>/ and the system datasets folder that holds all `files`."""
    for base in (paths.DATA_DIR / folder, paths.SYSTEM_DATASETS / folder):
        if all((base / name).is_file() for name in files):
            return base
    return None


def _download(url: str, target_dir: Path, fname: str, extract: bool = False) -> Path:
    """Fetch one file with Keras' downloader into `target_dir`, with a one-line error."""
    import keras

    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            keras.utils.get_file(
                fname=fname,
                origin=url,
                cache_dir=str(target_dir),
                cache_subdir=".",
                extract=extract,
            )
        )
    except Exception as exc:
        raise DatasetError(
            f"could not download {url} ({type(exc).__name__}: {exc}); put the files in "
            f"{target_dir} or install the Debian dataset package"
        ) from None


def load_idx_dataset(
    name: str, folder: str, class_names: tuple[str, ...], base_url: str | None
) -> RawDataset:
    """Load the four IDX files of an MNIST-style dataset, downloading them if nowhere on disk."""
    directory = _find_dir(folder, IDX_FILES)
    if directory is None:
        if base_url is None:
            raise DatasetError(f"{name}: IDX files not found in data/{folder}/")
        directory = paths.DATA_DIR / folder
        for fname in IDX_FILES:
            if not (directory / fname).is_file():
                _download(base_url + fname, directory, fname)
    x_train, y_train, x_test, y_test = arrays = [read_idx(directory / f) for f in IDX_FILES]
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DatasetError(f"{directory}: image and label counts differ; replace the files")
    return RawDataset.grayscale(name, class_names, arrays)


def load_fashion_mnist() -> RawDataset:
    return load_idx_dataset("fashion_mnist", "fashion-mnist", FASHION_CLASSES, FASHION_MNIST_URL)


MNIST_CLASSES = tuple(str(d) for d in range(10))


def load_mnist() -> RawDataset:
    classes = MNIST_CLASSES
    if _find_dir("mnist", IDX_FILES) is not None:
        return load_idx_dataset("mnist", "mnist", classes, None)
    path = paths.DATA_DIR / "mnist" / "mnist.npz"
    if not path.is_file():
        path = _download(MNIST_URL, path.parent, path.name)
    try:
        with np.load(path) as npz:
            arrays = [npz[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path} is corrupt ({exc}); delete it so it is fetched again") from None
    return RawDataset.grayscale("mnist", classes, arrays)


def load_cifar10() -> RawDataset:
    batches = "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    found = _find_dir("cifar10", [f"{batches}/{f}" for f in files])
    directory = found / batches if found is not None else None
    if directory is None:
        archive = _download(CIFAR10_URL, paths.DATA_DIR / "cifar10", "cifar-10-python.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(archive.parent, filter="data")
        directory = archive.parent / batches

    def read(fname: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(directory / fname, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return x.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.int64)
        except (OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise DatasetError(f"{directory / fname} is corrupt ({exc}); replace it") from None

    train = [read(f) for f in files[:-1]]
    x_test, y_test = read(files[-1])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return RawDataset("cifar10", CIFAR10_CLASSES, x_train, y_train, x_test, y_test)


# --- Folder datasets ---------------------------------------------------------------------------


def _hidden(relative: Path) -> bool:
    """Hidden files and folders (macOS' `._name.png` resource forks, `.DS_Store`, `.git`)."""
    return any(part.startswith(".") for part in relative.parts)


def _read_class_folders(
    root: Path, shape: ImageShape
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DatasetError(
            f"{root} must hold one sub-folder of images per class (found {len(class_dirs)})"
        )
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(class_dir))
        )
        if not files:
            raise DatasetError(
                f"class folder {class_dir} has no PNG/JPEG/WebP/BMP images; "
                "add some or remove the folder"
            )
        for file in files:
            try:
                images.append(image_bytes_to_pixels(file.read_bytes(), shape))
            except (ImageDecodeError, OSError) as exc:
                raise DatasetError(f"unreadable image {file}: {exc}; fix or remove it") from None
            labels.append(label)
    return tuple(p.name for p in class_dirs), np.stack(images), np.asarray(labels, np.int64)


def load_folder(root: Path, config: DataConfig) -> RawDataset:
    """A folder of class sub-folders, or `train/` and `test/` folders each laid out that way."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; check data.dataset=folder:PATH")
    size = config.image_size or DEFAULT_FOLDER_SIZE
    shape = ImageShape(size[0], size[1], config.channels or 3)
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, x_train, y_train = _read_class_folders(root / "train", shape)
        test_classes, x_test, y_test = _read_class_folders(root / "test", shape)
        if test_classes != classes:
            raise DatasetError(f"{root}/test has classes {test_classes}, train has {classes}")
    else:
        classes, x, y = _read_class_folders(root, shape)
        x_train, x_test, y_train, y_test = _stratified_split(x, y, FOLDER_TEST_FRACTION, seed=0)
    return RawDataset(f"folder:{root}", classes, x_train, y_train, x_test, y_test)


# --- Registry, splits and spec -----------------------------------------------------------------


@dataclass(frozen=True)
class BuiltIn:
    """A dataset this pipeline knows by name: how to load it, and its shape without loading."""

    load: Callable[[], RawDataset]
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]


BUILT_IN: dict[str, BuiltIn] = {
    "fashion_mnist": BuiltIn(load_fashion_mnist, (28, 28, 1), FASHION_CLASSES),
    "mnist": BuiltIn(load_mnist, (28, 28, 1), MNIST_CLASSES),
    "cifar10": BuiltIn(load_cifar10, (32, 32, 3), CIFAR10_CLASSES),
}


def load_raw(config: DataConfig) -> RawDataset:
    """Load the dataset named by the config, as published (before slicing and splitting)."""
    if config.dataset.startswith("folder:"):
        return load_folder(Path(config.dataset.removeprefix("folder:")).expanduser(), config)
    if config.dataset not in BUILT_IN:
        raise DatasetError(
            f"unknown dataset '{config.dataset}'; use one of {sorted(BUILT_IN)} or folder:PATH"
        )
    return BUILT_IN[config.dataset].load()


def _stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_keep, x_held, y_keep, y_held), with `fraction` of each class held out."""
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(x, y, test_size=fraction, stratify=stratify, random_state=seed)
    except ValueError as exc:  # scikit-learn: too few images for the split asked
        raise DatasetError(
            f"too few images to hold out {fraction} of {len(y)} across "
            f"{np.count_nonzero(counts)} classes ({exc}); add images, at least 10 per class"
        ) from None


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int):
    if limit is None or limit >= len(y):
        return x, y
    _, x_small, _, y_small = _stratified_split(x, y, limit, seed)
    return x_small, y_small


def _resize_all(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if x.shape[1:3] == tuple(size):
        return x
    from PIL import Image

    channels = x.shape[-1]
    out = np.empty((len(x), *size, channels), dtype=np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[..., 0] if channels == 1 else img)
        resized = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BILINEAR))
        out[i] = resized.reshape(*size, channels)
    return out


def make_splits(raw: RawDataset, config: DataConfig, seed: int) -> Splits:
    """Slice, split off a stratified validation set, and compute the normalisation statistics.

    The official test set is only sliced (when `test_limit` is set), never mixed into training.
    """
    x_train, y_train = _subsample(raw.x_train, raw.y_train, config.train_limit, seed)
    x_test, y_test = _subsample(raw.x_test, raw.y_test, config.test_limit, seed)
    if config.image_size is not None and not raw.name.startswith("folder:"):
        x_train, x_test = (
            _resize_all(x_train, config.image_size),
            _resize_all(x_test, config.image_size),
        )
    x_train, x_val, y_train, y_val = _stratified_split(x_train, y_train, config.val_fraction, seed)
    scaled = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64) / 255.0
    spec = DataSpec(
        name=raw.name,
        input_shape=tuple(int(v) for v in x_train.shape[1:]),
        class_names=raw.class_names,
        mean=tuple(round(float(v), 6) for v in scaled.mean(axis=0)),
        std=tuple(round(max(float(v), 1e-3), 6) for v in scaled.std(axis=0)),
    )
    return Splits(spec, x_train, y_train, x_val, y_val, x_test, y_test)


def load_splits(config: DataConfig, seed: int) -> Splits:
    """The one call training makes: load the configured dataset and split it."""
    return make_splits(load_raw(config), config, seed)


def describe_dataset(raw: RawDataset, splits: Splits) -> dict:
    """Counts per split and per class, for `pipeline data info` and the run's params."""
    per_class = {
        split: np.bincount(y, minlength=len(raw.class_names)).tolist()
        for split, y in (("train", splits.y_train), ("val", splits.y_val), ("test", splits.y_test))
    }
    return {
        "name": raw.name,
        "classes": list(raw.class_names),
        "image_shape": list(splits.spec.input_shape),
        "published": {"train": len(raw.y_train), "test": len(raw.y_test)},
        "splits": splits.sizes(),
        "per_class": per_class,
        "mean": list(splits.spec.mean),
        "std": list(splits.spec.std),
    }
