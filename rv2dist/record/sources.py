"""Models and inputs named on the command line, for ``rv2dist record``.

A model is ``module:callable`` (a constructor such as ``torchvision.models:resnet18``
or a class in ``nets.py``, called with ``--weights``/``--arg``, optionally loading a
``--checkpoint``), a HuggingFace model folder (``transformers``' ``AutoModel`` and its
tokenizer, offline), or a ``torch.export`` program (``.pt2``).  TorchScript files are
refused: PyTorch runs their submodules as compiled code, where no forward hook sees them.

Inputs are a ``.npy`` array, an ``.npz`` archive, a folder of images, or a text file
with one sentence per line, cut into batches on demand.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# torchvision's pretrained weights expect these (per-channel mean and std of ImageNet)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODEL_FORMS = ("module:callable (e.g. torchvision.models:resnet18, nets.py:Net), a HuggingFace model folder "
               "(with config.json), or a torch.export program (.pt2)")


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, and the folder of its tokenizer (or None)."""

    model: object
    tokenizer: str | None


def parse_arguments(pairs):
    """``["depth=18", "name=wide"]`` as keyword arguments: Python literals where they
    parse (numbers, True, None, lists), else strings."""
    kwargs = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--arg {pair!r} is not KEY=VALUE")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text
    return kwargs


def load_model(spec, *, weights=None, checkpoint=None, arguments=None, device="cpu"):
    """The model named by ``spec`` (see :data:`MODEL_FORMS`), on ``device``."""
    from rv2dist.record.hooks import require_torch

    torch = require_torch()
    path = Path(spec)
    if (weights is not None or arguments) and (path.exists() or ":" not in spec):
        raise ValueError("--weights and --arg go to a module:callable model, not to a folder or file")
    if path.is_dir():
        loaded = _huggingface(path)
    elif path.is_file():
        loaded = LoadedModel(_exported(path, torch), None)
    elif ":" in spec:
        loaded = LoadedModel(_constructed(spec, weights, arguments or {}, torch), None)
    else:
        raise ValueError(f"model {spec!r}: no such file or folder, and not module:callable; give {MODEL_FORMS}")
    if checkpoint is not None:
        _load_checkpoint(loaded.model, checkpoint, torch)
    return LoadedModel(loaded.model.to(device).eval(), loaded.tokenizer)


def _import(module):
    """A module by dotted name (the current folder first, as ``python -m`` does), or a
    ``.py`` file by path."""
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"model file {module} does not exist")
        # a name of its own: a nets.py must not replace a module of that name
        spec = importlib.util.spec_from_file_location(f"rv2dist_model_{path.stem}", path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded  # dataclasses and pickling look their module up
        spec.loader.exec_module(loaded)
        return loaded
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(Path.cwd()))


def _constructed(spec, weights, arguments, torch):
    module_name, _, attribute = spec.rpartition(":")
    try:
        target = _import(module_name)
    except ImportError as error:
        raise ValueError(f"model {spec!r}: cannot import {module_name!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"model {spec!r}: {module_name} has no {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, torch.nn.Module):
        if weights is not None or arguments:
            raise ValueError(f"model {spec!r} is a module, not a constructor: --weights and --arg do not apply")
        return target
    if not callable(target):
        raise ValueError(f"model {spec!r} is a {type(target).__name__}, neither a module nor callable")
    kwargs = dict(arguments, **({"weights": weights} if weights is not None else {}))
    try:
        model = target(**kwargs)
    except Exception as error:
        raise ValueError(f"model {spec!r} failed to build with {kwargs}: {type(error).__name__}: {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _huggingface(folder):
    if not (folder / "config.json").is_file():
        raise ValueError(f"model folder {folder} has no config.json: not a HuggingFace model folder; "
                         f"give {MODEL_FORMS}")
    try:
        from transformers import AutoModel
    except ImportError:
        raise ValueError(f"model folder {folder}: a HuggingFace model needs transformers (pip install "
                         "transformers)") from None
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    except Exception as error:
        raise ValueError(f"model folder {folder}: transformers cannot load it: {type(error).__name__}: "
                         f"{error}") from None
    tokenizer = folder if any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json",
                                                                      "vocab.txt")) else None
    return LoadedModel(model, None if tokenizer is None else str(tokenizer))


def _exported(path, torch):
    """A ``torch.export`` program as a module whose submodules keep their names (and
    so take forward hooks); TorchScript and pickled files are refused with the way out."""
    if path.suffix == ".pt2":
        try:
            return torch.export.unflatten(torch.export.load(path))
        except Exception as error:
            raise ValueError(f"model file {path}: torch.export cannot load it: {type(error).__name__}: "
                             f"{error}") from None
    if zipfile.is_zipfile(path) and any(name.split("/", 2)[1:2] == ["code"] for name in zipfile.ZipFile(path).namelist()):
        raise ValueError(f"model file {path} is TorchScript: PyTorch runs its submodules as compiled code, which "
                         "forward hooks cannot see. Save it with torch.export.save(torch.export.export(model, "
                         "example_inputs, dynamic_shapes=...), 'model.pt2'), or give its class as module:Class "
                         "--checkpoint FILE")
    raise ValueError(f"model file {path}: not a torch.export program (.pt2); a state dict or pickled model "
                     "loads through its class: module:Class --checkpoint FILE")


def _load_checkpoint(model, path, torch):
    """Weights from a ``state_dict`` file (or a dict holding one as ``"state_dict"``);
    tensors only, so loading runs no code from the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint {path}: cannot read it as a state dict: {type(error).__name__}: "
                         f"{error}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except Exception as error:
        raise ValueError(f"checkpoint {path} does not fit the model: {error}") from None


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
    if path.suffix == ".npy":
        return _arrays(path, np.load(path, mmap_mode="r"), None, batch_size, float_dtype)
    if path.suffix == ".npz":
        archive = np.load(path)
        arrays = [name for name in archive.files if name != "obs"]
        name = next((n for n in ("inputs", "x") if n in arrays), arrays[0] if len(arrays) == 1 else None)
        if name is None:
            raise ValueError(f"inputs {path} hold {', '.join(archive.files) or 'no arrays'}: name the inputs "
                             "array 'inputs' or 'x' (and the ids 'obs')")
        obs = archive["obs"] if "obs" in archive.files else None
        return _arrays(path, archive[name], obs, batch_size, float_dtype)
    raise ValueError(f"inputs {path}: give a .npy or .npz file, or a folder of images")


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
