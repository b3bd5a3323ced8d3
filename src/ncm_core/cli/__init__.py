"""The ``ncm`` command line: the same task functions as the API and the napari widgets.

Errors caused by input print one line (``ncm: error: <file>: <problem>``) and
exit with status 2; nothing is left half-written. A batch (several mosaics, frames or images) that
skipped failing inputs prints one warning line per input, then ``ncm: error: N of M inputs failed
(see <out>/failures.csv)``, and exits with status 3, like a run with unreadable blocks. One module per command group
adds its sub-commands (``add_parsers``) and runs them (``cmd_*``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ncm_core.errors import Cancelled, NcmError


def build_parser() -> argparse.ArgumentParser:
    """The ``ncm`` argument parser with every sub-command."""
    from ncm_core._version import __version__
    from ncm_core.cli import data, demo, explain, generate, measure, predict, pretrain, training

    p = argparse.ArgumentParser(
        prog="ncm",
        description="Tiling, training and prediction of CNN models on microscopy mosaics of battery electrodes.",
    )
    p.add_argument("--version", action="version", version=f"napari-ncm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in (data, training, pretrain, predict, explain, measure, generate, demo):
        mod.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from ncm_core.batch import BatchFailed, BatchIncomplete, BatchWarning
    from ncm_core.inference.engine import RunIncomplete  # predictions and heatmaps with unreadable blocks

    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, cat, *rest, **kw: print(f"ncm: warning: {msg}", file=sys.stderr)
    warnings.filterwarnings("ignore", category=BatchWarning)  # the commands print each failed input instead
    try:
        args.func(args)
    except RunIncomplete as exc:
        print(f"ncm: incomplete: {exc}", file=sys.stderr)
        return 3
    except BatchIncomplete as exc:  # the failed inputs were printed; the rest of the batch is written
        print(f"ncm: error: {exc}", file=sys.stderr)
        return 3
    except NcmError as exc:
        for f in exc.failures if isinstance(exc, BatchFailed) else ():
            print(f"ncm: warning: {f.line()}", file=sys.stderr)
        print(f"ncm: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("ncm: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nncm: interrupted", file=sys.stderr)
        return 130
    return 0
