"""`mnist-serve train`, `eda` and `compare`: the training package's subcommands of the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def add_train(sub: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
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


def add_eda(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eda", help="exploratory figures and statistics of MNIST")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default=str(REPO_ROOT / "reports" / "eda"))
    parser.set_defaults(handler=eda)


def eda(args: argparse.Namespace) -> int:
    from training import eda as exploration

    summary = exploration.run(args.data_dir, Path(args.out))
    print(summary)
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="agreement of two served models on the MNIST test set")
    parser.add_argument("first", nargs="?", default=str(REPO_ROOT / "models" / "cnn-pytorch"))
    parser.add_argument("second", nargs="?", default=str(REPO_ROOT / "models" / "cnn-tensorflow"))
    parser.add_argument("--data-dir")
    parser.set_defaults(handler=compare)


def compare(args: argparse.Namespace) -> int:
    from training.compare import compare_models

    print(json.dumps(compare_models(Path(args.first), Path(args.second), args.data_dir), indent=2))
    return 0


COMMANDS = (add_train, add_eda, add_compare)
