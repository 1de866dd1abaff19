"""The command line's options: one function per verb adds its parser (a new verb is
a function here, its code in a module of :mod:`rv2dist.cli`, and an entry in
:data:`rv2dist.cli.app.VERBS`), and the checks argparse cannot make."""

from __future__ import annotations

import argparse

from rv2dist.core.measures import MEASURES
from rv2dist.core.preprocess import DOWNSAMPLE_METHODS
from rv2dist.core.significance import CORRECTIONS, MARK_LEVEL
from rv2dist.planning.planner import PRECISIONS
from rv2dist.planning.routes import ROUTE_CHOICES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
RECORD_EPILOG = """\
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


class UsageError(ValueError):
    """Bad arguments that argparse cannot see."""


def build_parser() -> argparse.ArgumentParser:
    from rv2dist import __version__

    parser = argparse.ArgumentParser(
        prog="rv2dist",
        description="RV2, CKA, RSA, CCA, Procrustes and regression similarity matrices between network layers, on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"rv2dist {__version__}")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="show rv2dist's and the embedded cluster's log lines (INFO and up)")
    talk.add_argument("--log-level", choices=LOG_LEVELS,
                      help="log lines of rv2dist and the embedded cluster from this level (default: none)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (_demo, _compare, _run, _cluster, _import, _record, _info, _plot):
        add(verbs)
    return parser


def _cluster_options(verb):
    group = verb.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler")
    group.add_argument("--scheduler-file", metavar="FILE", help="scheduler file of a running cluster")
    group.add_argument("--gpus", action="store_true", help="local dask-cuda cluster, one worker per GPU")


def _demo(verbs):
    demo = verbs.add_parser("demo", help="synthesise two networks, compare them, draw the heatmap")
    demo.add_argument("--out", default="rv2dist-demo", help="output folder (default: ./rv2dist-demo)")
    demo.add_argument("--n-obs", type=int, default=23582, help="observations (default: 23582, as the seed study)")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the stores, result and heatmap of an earlier demo in --out")
    _cluster_options(demo)


def _compare(verbs):
    compare = verbs.add_parser("compare", help="compare the layers of store A with those of B (or A itself)")
    compare.add_argument("a", help="activation store of network A")
    compare.add_argument("b", nargs="?", help="activation store of network B (default: A against itself)")
    compare.add_argument("--metric", nargs="+", default=["rv2"], choices=list(MEASURES), metavar="M",
                         help=f"metrics among {', '.join(MEASURES)} (default: rv2)")
    compare.add_argument("--no-center", action="store_true", help="do not centre columns (hoggorm's RV2)")
    compare.add_argument("--route", default="auto", choices=ROUTE_CHOICES,
                         help="exact route: cross-products per row chunk (feature) or off-diagonal Gram tiles "
                              "(gram); auto picks the cheaper (default)")
    compare.add_argument("--precision", default="auto", choices=PRECISIONS,
                         help="dtype of the per-chunk products: auto (the input's on CPUs, float64 on GPUs), "
                              "input, or float64; sums are float64 always")
    compare.add_argument("--memory-budget", type=_bytes, metavar="BYTES",
                         help="bytes one task may use, e.g. 2GB (default: half of worker memory per thread)")
    compare.add_argument("--layers", nargs="+", metavar="LAYER", help="layers to compare (default: all)")
    compare.add_argument("--align-obs", action="store_true",
                         help="reorder B's observations to A's when both hold the same ids")
    compare.add_argument("--out", required=True, metavar="RESULT", help="result file, .nc or .zarr")
    compare.add_argument("--plot", metavar="PNG", help="also draw the first metric's heatmap")
    _significance_options(compare)
    _measure_options(compare)
    _cluster_options(compare)


def _measure_options(verb):
    measures = verb.add_argument_group("second-moment measures")
    measures.add_argument("--alpha", type=float, default=1.0,
                          help="shape_metric's partial whitening, 0 to 1 (1: rotations only; 0: CCA; default 1)")
    measures.add_argument("--ridge-lambda", type=float, default=0.1,
                          help="ridge's penalty, relative to the predicting layer's mean eigenvalue (default 0.1)")
    measures.add_argument("--svcca-variance", type=float, default=0.99,
                          help="share of each layer's variance svcca keeps, above 0 and at most 1 (default 0.99)")
    measures.add_argument("--rcond", type=float,
                          help="relative eigenvalue cut-off of whitening and ranks (default 1e-8 for float64 "
                               "products, 1e-5 for float32)")


def _significance_options(verb):
    tests = verb.add_argument_group("significance")
    tests.add_argument("--tests", action="store_true",
                       help="add z-scores, p-values and corrected p-values from the exact permutation moments")
    tests.add_argument("--correction", default="holm", choices=CORRECTIONS,
                       help="correction across the matrix: holm (family-wise error) or bh (false discovery "
                            "rate; default: holm)")
    tests.add_argument("--permutations", type=int, metavar="K", help="also K seeded Monte Carlo permutations")
    tests.add_argument("--bootstrap", type=int, metavar="B",
                       help="percentile intervals from B Poisson bootstrap replicates")
    tests.add_argument("--keep-replicates", action="store_true",
                       help="also store every bootstrap replicate, for paired differences between cells and "
                            "results (rv2dist.compare_cells, rv2dist.compare_results)")
    tests.add_argument("--seed", type=int, default=0, help="seed of permutations and bootstrap (default: 0)")
    tests.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default: 0.95)")


def _run(verbs):
    run = verbs.add_parser("run", help="run a job file: many comparisons, resumable")
    run.add_argument("job", help="job file (TOML; see docs/jobs.md for its keys)")
    run.add_argument("--out", metavar="DIR", help="results folder, anywhere (default: the job's out, "
                                                  "a folder inside the job file's folder)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cluster_options(run)


def _cluster(verbs):
    cluster = verbs.add_parser("cluster", help="start a local cluster; print its address and dashboard")
    cluster.add_argument("--workers", type=int, help="workers (default: one per core)")
    cluster.add_argument("--gpus", action="store_true", help="one dask-cuda worker per GPU")


def _import(verbs):
    convert = verbs.add_parser("import", help="make a store from .npz/.npy files or another store, "
                                              "with pooling and downsampling")
    convert.add_argument("source", help=".npz file, folder of .npy files (one per layer), .h5/.hdf5 file (one "
                                        "dataset per layer), .nc file or xarray zarr store, or an activation store")
    convert.add_argument("--obs-dim", metavar="DIM", help="sample dimension of a .nc file or xarray store "
                                                          "(default: obs)")
    convert.add_argument("--out", required=True, metavar="STORE", help="the store to write")
    convert.add_argument("--network", help="network name (default: the source store's, else STORE's name)")
    convert.add_argument("--layers", nargs="+", metavar="LAYER", help="layers in depth order (default: all)")
    convert.add_argument("--pool", action="store_true", help="average feature maps over spatial/temporal axes")
    convert.add_argument("--channel-axis", type=int, default=1, help="channel axis of feature maps (default: 1)")
    _downsample_options(convert)
    convert.add_argument("--overwrite", action="store_true", help="replace an existing STORE")


def _downsample_options(verb):
    verb.add_argument("--downsample", type=int, default=1, metavar="K", help="keep one observation in K")
    verb.add_argument("--method", default="stride", choices=DOWNSAMPLE_METHODS,
                      help="every K-th observation, or the mean of each block of K (default: stride)")


def _record(verbs):
    from rv2dist.record.hooks import STORED_DTYPES
    from rv2dist.record.pooling import POOLS
    from rv2dist.record.input_files import NORMALIZATIONS

    record = verbs.add_parser("record", help="run a PyTorch model over inputs and record its layers into a store",
                              epilog=RECORD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    record.add_argument("model", help="module:callable, a HuggingFace model folder, or a .pt2 file (see below)")
    record.add_argument("--out", metavar="STORE", help="the store to write (required unless --list-layers)")
    record.add_argument("--layers", nargs="+", metavar="LAYER", help="module paths to record, in depth order")
    record.add_argument("--list-layers", action="store_true", help="print the model's module paths and types, "
                                                                   "then stop")
    source = record.add_mutually_exclusive_group()
    source.add_argument("--text", metavar="FILE", help="sentences, one a line (UTF-8)")
    source.add_argument("--inputs", metavar="PATH", help=".npy or .npz file, or a folder of images")
    record.add_argument("--tokenizer", metavar="FOLDER", help="tokenizer for --text (default: the model folder's)")
    record.add_argument("--max-length", type=int, default=128, metavar="N",
                        help="tokens kept of a sentence (default: 128)")
    record.add_argument("--image-size", type=int, default=224, metavar="PIXELS",
                        help="side images are resized to (default: 224)")
    record.add_argument("--normalize", default="imagenet", choices=NORMALIZATIONS,
                        help="standardise images with ImageNet's channel means and stds (default), or not")
    record.add_argument("--weights", metavar="W",
                        help="passed to a module:callable as weights= (torchvision: DEFAULT, ...)")
    record.add_argument("--arg", action="append", metavar="KEY=VALUE",
                        help="a keyword argument of a module:callable (Python literal or text); repeatable")
    record.add_argument("--checkpoint", metavar="FILE", help="a state dict (torch.save) to load into the model")
    record.add_argument("--pool", default="mean", choices=POOLS + ("none",),
                        help="pool outputs over positions (mean, cls, first, last, max), take each real token as "
                             "an observation (tokens), or keep outputs whole (none); default: mean")
    record.add_argument("--channel-axis", type=int, metavar="AXIS",
                        help="channel axis of 3+-D outputs (default: inferred)")
    record.add_argument("--output", metavar="FIELD", help="field of tuple/ModelOutput outputs (name or index)")
    record.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="observations per batch (default: 32)")
    _downsample_options(record)
    record.add_argument("--dtype", default="float32", choices=STORED_DTYPES,
                        help="dtype of the stored activations (default: float32)")
    record.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")
    record.add_argument("--network", metavar="NAME", help="network name (default: STORE's name)")
    record.add_argument("--overwrite", action="store_true", help="replace an existing STORE")


def _info(verbs):
    info = verbs.add_parser("info", help="describe an activation store")
    info.add_argument("store", help="the activation store (checks that every chunk is there)")


def _plot(verbs):
    plot = verbs.add_parser("plot", help="draw a result as a heatmap (a job's combined result: one per comparison)")
    plot.add_argument("result", help="result file (.nc or .zarr), a job's combined.nc, or a job's results folder")
    plot.add_argument("--out", required=True, help="image file (.png, .svg or .pdf)")
    plot.add_argument("--metric", help="metric to draw (default: the first)")
    plot.add_argument("--significance", type=float, default=MARK_LEVEL, metavar="LEVEL",
                      help="mark cells whose corrected p-value is below LEVEL, when the result has tests "
                           "(default: 0.05; 0: no marks)")


def _bytes(text):
    """A byte count from the command line: 2000000000, 2GB, 1.5GiB."""
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (e.g. 2GB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return value


def check_at_least(args, **least) -> None:
    """Each named count option at least its minimum (``workers=1``); unset ones pass."""
    for option, minimum in least.items():
        value = getattr(args, option)
        if value is not None and value < minimum:
            raise UsageError(f"--{option.replace('_', '-')} must be at least {minimum}, not {value}")


def progress_on(args) -> bool:
    """Whether a verb shows progress bars and the cost line: not with ``-q`` (nor with
    ``run --no-progress``)."""
    return not (args.quiet or getattr(args, "no_progress", False))


def log_level(args) -> str | None:
    """The level ``-v``/``--log-level`` ask log lines from (None: none shown)."""
    return args.log_level or ("INFO" if args.verbose else None)
