"""The ``rv2dist`` command line: its entry point, verbs and exit statuses.

Exit status: 0 on success; 2 on bad input or usage, with a one-paragraph message
naming the file, layer or value at fault and no partial output; 1 when the cluster
goes away; 130 on Ctrl-C; 141 when the reader of the output leaves.  The options are
:mod:`rv2dist.cli.parser`; each verb's code is a module of :mod:`rv2dist.cli`.
"""

from __future__ import annotations

import contextlib
import os
import sys

from rv2dist.cli import compare, connection, files, record, run
from rv2dist.cli.parser import build_parser, log_level

# OSError: a read-only or full output folder, a folder where a file should go (the
# messages name the path)
_BAD_INPUT = (ValueError, TypeError, KeyError, OSError)

# each verb: a function of the parsed arguments
_VERBS = {"demo": compare.run_demo, "compare": compare.run_compare, "run": run.run_job_file,
          "cluster": connection.run_cluster, "import": files.run_import, "record": record.run_record,
          "info": files.run_info, "plot": files.run_plot}


def main(argv=None) -> int:
    """Entry point of the ``rv2dist`` command."""
    from rv2dist.service.cluster import ClusterLostError

    args = build_parser().parse_args(argv)
    _show_logs(log_level(args))
    try:
        with _plain_warnings(args.verb):
            _VERBS[args.verb](args)
    except BrokenPipeError:
        # `rv2dist info STORE | head`: the reader left; nothing more to say, and the
        # interpreter's final flush must not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ClusterLostError as error:
        print(f"rv2dist {args.verb}: error: {_said(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        # Ctrl-C: results already written stay (each is written whole or not at all)
        print(f"\nrv2dist {args.verb}: interrupted" + (f"; {error}" if str(error) else ""), file=sys.stderr)
        return 130
    except _BAD_INPUT as error:
        print(f"rv2dist {args.verb}: error: {_said(error)}", file=sys.stderr)
        return 2
    return 0


def _show_logs(level):
    """rv2dist's log lines from ``level`` on stderr (None: the default, none); the
    embedded cluster's own are set where it starts (:mod:`rv2dist.cli.connection`)."""
    if level:
        import logging

        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("rv2dist").setLevel(level)


@contextlib.contextmanager
def _plain_warnings(verb):
    """rv2dist's own warnings as the errors are shown, ``rv2dist VERB: warning: ...``,
    each text once (options are checked before the job and again when it starts);
    other libraries' warnings as Python shows them."""
    import warnings

    shown = set()
    python_way = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("rv2dist"):
            return python_way(message, category, filename, lineno, file, line)
        text = f"rv2dist {verb}: warning: {message}"
        if text not in shown:
            shown.add(text)
            print(text, file=sys.stderr, flush=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = python_way


def _said(error):
    """What an error says, never an empty line: its message without leading or
    trailing blank lines, or its type when it says nothing."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = str(message).strip()
    return text if text else type(error).__name__
