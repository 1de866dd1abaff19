"""The ``record`` verb: a model named on the command line, run over inputs from files,
its layers recorded into a store (:func:`rv2dist.record_activations` underneath; the
models and inputs it names are :mod:`rv2dist.record.models` and
:mod:`rv2dist.record.input_files`)."""

from __future__ import annotations

from pathlib import Path

from rv2dist.cli.parser import UsageError, check_at_least, progress_on


def _check(args):
    """Everything that can be checked before a model is loaded."""
    if not args.list_layers:
        if not args.out:
            raise UsageError("record needs --out STORE (or --list-layers)")
        if not args.layers:
            raise UsageError("record needs --layers LAYER ... (--list-layers prints the model's module paths)")
        if not (args.text or args.inputs):
            raise UsageError("record needs inputs: --text FILE or --inputs PATH")
        out = Path(args.out)
        if not out.parent.is_dir():
            raise UsageError(f"store {out}: folder {out.parent} does not exist")
        if out.exists() and not args.overwrite:
            raise UsageError(f"store {out} exists; --overwrite replaces it")
    from rv2dist.record.hooks import check_device

    check_device(args.device)
    check_at_least(args, max_length=1, image_size=1, batch_size=1, downsample=1)


def _field(text):
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def run_record(args):
    """The ``record`` verb: bad input is a ValueError naming the file, model or layer,
    raised before any store is written (an interrupted recording leaves none)."""
    from rv2dist.io.reader import describe
    from rv2dist.record.recording import record_activations
    from rv2dist.record.input_files import load_inputs
    from rv2dist.record.models import load_model, parse_arguments

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
                       device=args.device, dtype=args.dtype, overwrite=args.overwrite, progress=progress_on(args),
                       attrs={"model_source": args.model, "inputs": str(args.text or args.inputs)})
    print(describe(args.out))
