"""`mnist-serve bench`: the benchmark's subcommand of the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.matrix import ANCHORS, parse_anchors

REPO_ROOT = Path(__file__).resolve().parent.parent
ANCHOR_NAMES = ", ".join(ANCHORS)


def anchor_list(value: str) -> tuple[str, ...]:
    try:
        return parse_anchors(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_bench(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark against the naive server, in-process ONNX Runtime and, "
                                          "with --anchors, MLServer, KServe and Triton")
    parser.add_argument("--model", default="cnn-pytorch")
    parser.add_argument("--models-dir", default=str(REPO_ROOT / "models"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    parser.add_argument("--runs", type=int, default=3, help="repeat each point and report the median")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="one short run of each point")
    parser.add_argument("--anchors", nargs="?", const=ANCHORS, default=(), type=anchor_list, metavar="LIST",
                        help=f"also measure the anchors ({ANCHOR_NAMES}; default all), each from its environment "
                             "under bench/.anchors; one that is not built is skipped with a line saying so")
    parser.add_argument("--setup-anchors", nargs="*", default=None, metavar="ANCHOR",
                        help=f"build the anchors' environments instead ({ANCHOR_NAMES}; default all) and exit")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: requests/s with the service on 1 .. C-1 cores (--workers, taskset) and wrk "
                             "on the others; writes scaling.md and scaling.json into --out")
    parser.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    if args.setup_anchors is not None:
        from bench.anchors.setup import main as setup_main

        return setup_main(args.setup_anchors)
    if args.scaling:
        from bench.scaling import main as scaling_main

        runs = 1 if args.quick else args.runs
        return scaling_main(Path(args.models_dir), args.model, args.duration, runs, Path(args.out))
    from bench.run import main as bench_main

    return bench_main(args)


COMMANDS = (add_bench,)
