"""Models named on the command line, for ``rv2dist record``.

A model is ``module:callable`` (a constructor such as ``torchvision.models:resnet18``
or a class in ``nets.py``, called with ``--weights``/``--arg``, optionally loading a
``--checkpoint``), a HuggingFace model folder (``transformers``' ``AutoModel`` and its
tokenizer, offline), or a ``torch.export`` program (``.pt2``).  TorchScript files are
refused: PyTorch runs their submodules as compiled code, where no forward hook sees them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

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
    from rv2dist.record.pooling import require_torch

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


