"""``rv2dist record``: a model named on the command line, run over inputs from files,
its layers recorded into a store (:func:`rv2dist.record_activations` underneath)."""

from __future__ import annotations

from pathlib import Path

from rv2dist.record.pooling import POOLS

EPILOG = """\
MODEL is one of
  module:callable     a constructor or class, called with --weights/--arg, then --checkpoint
                      loaded (torchvision.models:resnet18, mypackage.nets:Net, nets.py:Net)
  FOLDER              a HuggingFace model folder (config.json, weights, tokenizer); offline
  FILE.pt2            a torch.export program (torch.export.save); TorchScript cannot be hooked
Inputs: --text FILE (one sentence per line, through the tokenizer; ids: line numbers), or
--inputs a .npy array, an .npz archive (array 'inputs' or 'x', ids 'obs') or a folder of
images (resized, scaled to [0, 1], ImageNet-normalised; ids: file names).
Example: rv2dist record ./all-MiniLM-L6-v2 --text sentences.txt --layers encoder.layer.0
         encoder.layer.5 --pool mean --out minilm.zarr
"""


def add_record_parser(verbs):
    import argparse

    record = verbs.add_parser("record", help="run a PyTorch model over inputs and record its layers into a store",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    record.add_argument("model", help="module:callable, a HuggingFace model folder, or a .pt2 file (see below)")
    record.add_argument("--out", metavar="STORE", help="the store to write (required unless --list-layers)")
    record.add_argument("--layers", nargs="+", metavar="LAYER", help="module paths to record, in depth order")
    record.add_argument("--list-layers", action="store_true", help="print the model's module paths and types, "
                                                                   "then stop")
    source = record.add_mutually_exclusive_group()
    source.add_argument("--text", metavar="FILE", help="sentences, one a line (UTF-8)")
    source.add_argument("--inputs", metavar="PATH", help=".npy or .npz file, or a folder of images")
    record.add_argument("--tokenizer", metavar="FOLDER", help="tokenizer for --text (default: the model folder's)")
    record.add_argument("--max-length", type=int, default=128, metavar="N", help="tokens kept of a sentence (default: 128)")
    record.add_argument("--image-size", type=int, default=224, metavar="PIXELS", help="side images are resized to (default: 224)")
    record.add_argument("--normalize", default="imagenet", choices=("imagenet", "none"),
                        help="standardise images with ImageNet's channel means and stds (default), or not")
    record.add_argument("--weights", metavar="W", help="passed to a module:callable as weights= (torchvision: DEFAULT, ...)")
    record.add_argument("--arg", action="append", metavar="KEY=VALUE",
                        help="a keyword argument of a module:callable (Python literal or text); repeatable")
    record.add_argument("--checkpoint", metavar="FILE", help="a state dict (torch.save) to load into the model")
    record.add_argument("--pool", default="mean", choices=POOLS + ("none",),
                        help="pool outputs over positions (mean, cls, first, last, max), take each real token as "
                             "an observation (tokens), or keep outputs whole (none); default: mean")
    record.add_argument("--channel-axis", type=int, metavar="AXIS", help="channel axis of 3+-D outputs (default: inferred)")
    record.add_argument("--output", metavar="FIELD", help="field of tuple/ModelOutput outputs (name or index)")
    record.add_argument("--batch-size", type=int, default=32, metavar="N", help="observations per batch (default: 32)")
    record.add_argument("--downsample", type=int, default=1, metavar="K", help="keep one observation in K")
    record.add_argument("--method", default="stride", choices=("stride", "mean"),
                        help="every K-th observation, or the mean of each block of K (default: stride)")
    record.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"),
                        help="dtype of the stored activations (default: float32)")
    record.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")
    record.add_argument("--network", metavar="NAME", help="network name (default: STORE's name)")
    record.add_argument("--overwrite", action="store_true", help="replace an existing STORE")


def _check(args):
    """Everything that can be checked before a model is loaded."""
    if not args.list_layers:
        if not args.out:
            raise ValueError("record needs --out STORE (or --list-layers)")
        if not args.layers:
            raise ValueError("record needs --layers LAYER ... (--list-layers prints the model's module paths)")
        if not (args.text or args.inputs):
            raise ValueError("record needs inputs: --text FILE or --inputs PATH")
        out = Path(args.out)
        if not out.parent.is_dir():
            raise ValueError(f"store {out}: folder {out.parent} does not exist")
        if out.exists() and not args.overwrite:
            raise ValueError(f"store {out} exists; --overwrite replaces it")
    from rv2dist.record.hooks import check_device

    check_device(args.device)
    for option in ("max_length", "image_size", "batch_size", "downsample"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, not {getattr(args, option)}")


def _field(text):
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def run_record(args):
    """The ``record`` verb: bad input is a ValueError naming the file, model or layer,
    raised before any store is written (an interrupted recording leaves none)."""
    from rv2dist.io.reader import describe
    from rv2dist.record.recording import record_activations
    from rv2dist.record.sources import load_inputs, load_model, parse_arguments

    _check(args)
    try:
        loaded = load_model(args.model, weights=args.weights, checkpoint=args.checkpoint,
                            arguments=parse_arguments(args.arg), device=args.device)
    except ImportError as error:  # no torch here
        raise ValueError(str(error)) from None
    if args.list_layers:
        names = [(name, type(module).__name__) for name, module in loaded.model.named_modules() if name]
        width = max((len(name) for name, _ in names), default=0)
        print("\n".join(f"{name:<{width}}  {kind}" for name, kind in names))
        return
    first = next(loaded.model.parameters(), None)
    inputs = load_inputs(inputs=args.inputs, text=args.text, tokenizer=args.tokenizer or loaded.tokenizer,
                         batch_size=args.batch_size, max_length=args.max_length, image_size=args.image_size,
                         normalize=args.normalize, float_dtype=None if first is None else first.dtype)
    record_activations(args.out, loaded.model, inputs, args.layers, network=args.network, obs=inputs.obs,
                       pool=None if args.pool == "none" else args.pool, channel_axis=args.channel_axis,
                       output=_field(args.output), downsample_by=args.downsample, method=args.method,
                       device=args.device, dtype=args.dtype, overwrite=args.overwrite,
                       attrs={"model_source": args.model, "inputs": str(args.text or args.inputs)})
    print(describe(args.out))
