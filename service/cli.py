"""`mnist-serve`: serve, train, eda, compare, bench. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _add_serve(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve the models under the models directory (uvicorn)")
    parser.add_argument("--host", help="bind address (MNIST_SERVE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (MNIST_SERVE_PORT, default 8000)")
    parser.add_argument("--models-dir", help="models/<name>/<version>/model.onnx root (MNIST_SERVE_MODELS_DIR)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], help="execution provider (MNIST_SERVE_DEVICE)")
    parser.add_argument("--default-model", help="model behind /v1/predict (MNIST_SERVE_DEFAULT_MODEL)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per session (MNIST_SERVE_THREADS)")
    parser.add_argument("--log-level", help="debug, info, warning, error (MNIST_SERVE_LOG_LEVEL)")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from service.config import Settings
    from service.server import run_server

    overrides = {
        key: value
        for key, value in {
            "host": args.host, "port": args.port, "models_dir": args.models_dir, "device": args.device,
            "default_model": args.default_model, "threads": args.threads, "log_level": args.log_level,
        }.items()
        if value is not None
    }
    return run_server(Settings(**overrides))


def _add_train(sub: argparse._SubParsersAction) -> None:
    from training.common import TrainSettings

    defaults = TrainSettings()
    parser = sub.add_parser("train", help="train a contract architecture and export it to ONNX")
    parser.add_argument("--framework", choices=["pytorch", "tensorflow"], default="pytorch")
    parser.add_argument("--arch", choices=["cnn", "lenet"], default="cnn")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak learning rate")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default=defaults.optimizer)
    parser.add_argument("--schedule", choices=["onecycle", "constant"], default=defaults.schedule)
    parser.add_argument("--augment-shift", type=int, default=defaults.augment_shift, help="max random shift in pixels (0: off)")
    parser.add_argument("--validation-size", type=int, default=defaults.validation_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-limit", type=int, default=0, help="train on N images only (quick runs)")
    parser.add_argument("--test-limit", type=int, default=0, help="evaluate on N test images only (quick runs)")
    parser.add_argument("--threads", type=int, default=0, help="framework CPU threads (0: its default)")
    parser.add_argument("--dry-run", action="store_true", help="1 epoch on 1,000 images: checks the pipeline end to end")
    parser.add_argument("--data-dir", help="MNIST IDX files (else MNIST_DIR, else data/mnist; downloaded when missing)")
    parser.add_argument("--out", default=str(REPO_ROOT / "models"), help="models directory to write into")
    parser.add_argument("--version", type=int, help="model version (default: next free)")
    parser.add_argument("--report-dir", default=str(REPO_ROOT / "reports"), help="evaluation figures")
    parser.add_argument("--tensorboard", help="TensorBoard log directory (tensorflow)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from training.common import TrainSettings

    settings = TrainSettings(
        architecture=args.arch, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        optimizer=args.optimizer, schedule=args.schedule, validation_size=args.validation_size,
        augment_shift=args.augment_shift, seed=args.seed, train_limit=args.train_limit,
        test_limit=args.test_limit, threads=args.threads,
    )
    if args.dry_run:
        settings.epochs, settings.train_limit, settings.test_limit = 1, 1000, 500
    if args.framework == "pytorch":
        from training import torch_train as trainer
    else:
        from training import tf_train as trainer  # type: ignore[no-redef]
    kwargs = {"tensorboard_dir": args.tensorboard} if args.framework == "tensorflow" else {}
    path = trainer.run(settings, args.data_dir, Path(args.out), Path(args.report_dir) if args.report_dir else None,
                       version=args.version, progress=not args.no_progress, **kwargs)
    print(path)
    return 0


def _add_eda(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eda", help="exploratory figures and statistics of MNIST")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default=str(REPO_ROOT / "reports" / "eda"))
    parser.set_defaults(handler=_eda)


def _eda(args: argparse.Namespace) -> int:
    from training import eda

    summary = eda.run(args.data_dir, Path(args.out))
    print(summary)
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="agreement of two served models on the MNIST test set")
    parser.add_argument("first", nargs="?", default=str(REPO_ROOT / "models" / "cnn-pytorch"))
    parser.add_argument("second", nargs="?", default=str(REPO_ROOT / "models" / "cnn-tensorflow"))
    parser.add_argument("--data-dir")
    parser.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    import json

    from training.compare import compare_models

    print(json.dumps(compare_models(Path(args.first), Path(args.second), args.data_dir), indent=2))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark against the naive server and in-process ONNX Runtime")
    parser.add_argument("--model", default="cnn-pytorch")
    parser.add_argument("--models-dir", default=str(REPO_ROOT / "models"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    parser.add_argument("--runs", type=int, default=3, help="repeat each point and report the median")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="one short run of each point")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from bench.run import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-serve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve, _add_train, _add_eda, _add_compare, _add_bench):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
