"""Inputs named on the command line, for ``rv2dist record``: a ``.npy`` array, an
``.npz`` archive, a folder of images, or a text file with one sentence per line, cut
into batches on demand."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# torchvision's pretrained weights expect these (per-channel mean and std of ImageNet)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALIZATIONS = ("imagenet", "none")


@dataclass(frozen=True)
class Inputs:
    """Batches made on demand from ``count`` observations (re-iterable, with a length),
    and their ids (None: 0, 1, ...)."""

    make: object
    count: int
    batch_size: int
    obs: object = None

    def __len__(self):
        return -(-self.count // self.batch_size)

    def __iter__(self):
        return (self.make(start, min(start + self.batch_size, self.count))
                for start in range(0, self.count, self.batch_size))


def load_inputs(*, inputs=None, text=None, tokenizer=None, batch_size=32, max_length=128, image_size=224,
                normalize="imagenet", float_dtype=None):
    """The :class:`Inputs` of ``rv2dist record``: sentences of ``text`` (one a line,
    blank lines skipped, ids their line numbers) through ``tokenizer``'s folder; or
    ``inputs``: a ``.npy`` array (N, ...), an ``.npz`` archive (its array ``inputs``
    or ``x``, or its only array; ids from an ``obs`` array if it has one), or a folder
    of images (ids their file names).  Floating inputs become ``float_dtype``."""
    if text is not None:
        return _sentences(Path(text), tokenizer, batch_size, max_length)
    path = Path(inputs)
    if path.is_dir():
        return _images(path, batch_size, image_size, normalize, float_dtype)
    if not path.is_file():
        raise ValueError(f"inputs {path} do not exist")
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"inputs {path}: give a .npy or .npz file, or a folder of images")
    with _reading(path):
        if path.suffix == ".npy":
            array, obs, files = np.load(path, mmap_mode="r"), None, ()
        else:
            archive = np.load(path)
            files = archive.files
            arrays = [name for name in files if name != "obs"]
            name = next((n for n in ("inputs", "x") if n in arrays), arrays[0] if len(arrays) == 1 else None)
            array = None if name is None else archive[name]
            obs = archive["obs"] if "obs" in files else None
    if array is None:
        raise ValueError(f"inputs {path} hold {', '.join(files) or 'no arrays'}: name the inputs array 'inputs' or "
                         "'x' (and the ids 'obs')")
    return _arrays(path, array, obs, batch_size, float_dtype)


@contextlib.contextmanager
def _reading(path):
    """numpy's errors reading ``path`` (not an array file, damaged, or of Python
    objects, which are not loaded) as a ValueError naming it."""
    import zipfile
    import zlib

    try:
        yield
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"inputs {path}: cannot read it as a {path.suffix} array file: {error}") from None


def _as_tensor(array, float_dtype):
    import torch

    tensor = torch.from_numpy(np.array(array))  # a copy: memory-mapped rows are read-only
    return tensor.to(float_dtype) if tensor.is_floating_point() and float_dtype is not None else tensor


def _arrays(path, array, obs, batch_size, float_dtype):
    if array.ndim < 1 or array.dtype.kind not in "fiub" or not len(array):
        raise ValueError(f"inputs {path}: an array of shape {array.shape} and dtype {array.dtype}; the inputs must "
                         "be numbers, observations first")
    if obs is not None and len(obs) != len(array):
        raise ValueError(f"inputs {path}: {len(obs)} ids in 'obs' for {len(array)} inputs")
    return Inputs(lambda start, stop: _as_tensor(array[start:stop], float_dtype), len(array), batch_size, obs)


def _images(folder, batch_size, size, normalize, float_dtype):
    """RGB images resized to ``size`` x ``size``, scaled to [0, 1] and, with
    ``normalize="imagenet"``, standardised per channel as torchvision's weights expect."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"inputs {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    mean, std = (np.array(v, np.float32)[:, None, None] for v in IMAGENET) if normalize == "imagenet" else (0, 1)

    def load(path):
        from PIL import Image

        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((size, size)), np.float32) / 255
        except OSError as error:
            raise ValueError(f"image {path}: cannot read it: {error}") from None
        return (pixels.transpose(2, 0, 1) - mean) / std

    def make(start, stop):
        return _as_tensor(np.stack([load(path) for path in files[start:stop]]), float_dtype)

    return Inputs(make, len(files), batch_size, np.array([p.name for p in files], dtype=object))


def _sentences(path, tokenizer, batch_size, max_length):
    if tokenizer is None:
        raise ValueError(f"--text {path} needs a tokenizer: a HuggingFace model folder has its own, or give "
                         "--tokenizer FOLDER")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"text {path}: cannot read it as UTF-8 text: {error}") from None
    numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise ValueError(f"text {path} holds no sentences (one a line)")
    try:
        from transformers import AutoTokenizer

        tokenize = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    except Exception as error:
        raise ValueError(f"tokenizer {tokenizer}: cannot load it: {type(error).__name__}: {error}") from None

    def make(start, stop):
        batch = tokenize([line for _, line in numbered[start:stop]], padding=True, truncation=True,
                         max_length=max_length, return_tensors="pt")
        return dict(batch)

    return Inputs(make, len(numbered), batch_size, np.array([number for number, _ in numbered]))
