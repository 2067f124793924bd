"""`mnist-serve bench`: the benchmark's subcommand of the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def add_bench(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark against the naive server and in-process ONNX Runtime")
    parser.add_argument("--model", default="cnn-pytorch")
    parser.add_argument("--models-dir", default=str(REPO_ROOT / "models"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    parser.add_argument("--runs", type=int, default=3, help="repeat each point and report the median")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="one short run of each point")
    parser.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    from bench.run import main as bench_main

    return bench_main(args)


COMMANDS = (add_bench,)
