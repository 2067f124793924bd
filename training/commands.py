"""`mnist-serve train`, `eda`, `compare` and `evaluate`: the training package's subcommands of the CLI.

Heavy imports (torch, TensorFlow, scipy, matplotlib) happen inside each handler. A handler that cannot
do what it was asked prints one line `mnist-serve <command>: <why>` to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.augment import AUGMENTATION_RANGES, PRESETS
from training.quantize import add_quantize

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
FRAMEWORKS = ("pytorch", "tensorflow")
ARCHITECTURES = ("cnn", "lenet")
AUGMENTATION_HELP = {
    "shift": "max shift, px", "rotation": "max rotation, degrees", "scale": "max relative size change",
    "aspect": "max relative width change (log-uniform)", "shear": "max horizontal shear (slant, dx/dy)",
    "stroke_thin": "max stroke thinning, px", "stroke_thick": "max stroke widening, px",
    "elastic_alpha": "elastic displacement scale, px", "elastic_sigma": "elastic field smoothing, px",
    "elastic_probability": "fraction of images distorted elastically",
    "low_resolution_probability": "fraction of images reduced to a coarse grid and enlarged back",
    "low_resolution_min": "smallest side of that grid, px", "low_resolution_max": "largest side of that grid, px",
    "blur_probability": "fraction of images blurred", "blur_sigma": "max Gaussian blur sigma, px",
    "noise_probability": "fraction of images with sensor noise", "noise_sigma": "max noise sigma, on the [0, 1] scale",
}
DATA_DIR_HELP = "MNIST IDX files (default: $MNIST_DIR, else data/mnist; downloaded when missing)"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, except where there is none to show (None, an off flag):
    those say in their help what happens when they are left out."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _subparser(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, formatter_class=DefaultsHelpFormatter)


def _fail(command: str, message: str) -> int:
    print(f"mnist-serve {command}: {message}", file=sys.stderr)
    return 2


def add_train(sub: argparse._SubParsersAction) -> None:
    from training.common import TrainSettings

    defaults = TrainSettings()
    parser = _subparser(sub, "train", "train a contract architecture and export it to ONNX",
                        "Train one architecture in one framework, export it to ONNX under the model contract, check the "
                        "export against the framework, measure it on the MNIST test set and write "
                        "<out>/<arch>-<framework>/<version>/model.onnx.")
    parser.add_argument("--framework", choices=FRAMEWORKS, default="pytorch", help="training framework")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="cnn", help="contract architecture")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per optimiser step")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak learning rate")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default=defaults.optimizer, help="optimiser")
    parser.add_argument("--schedule", choices=["onecycle", "constant"], default=defaults.schedule, help="learning-rate schedule")
    augment = parser.add_argument_group("augmentation", "a preset, then any range overridden (0 turns one off); "
                                        "docs/training.md says why these ranges")
    augment.add_argument("--augment", choices=sorted(PRESETS), default=defaults.augment,
                         help="preset: devices (version 2's: handwriting plus how devices digitise), handwriting "
                              "(the first version 2's), shift (version 1's: whole-pixel shifts only) or none")
    for name in AUGMENTATION_RANGES:
        augment.add_argument(f"--augment-{name.replace('_', '-')}", type=float, metavar="X",
                             help=f"{AUGMENTATION_HELP[name]} (default: the preset's)")
    parser.add_argument("--init-from", metavar="MODEL",
                        help="start from this model's weights instead of a random initialisation (fine-tuning): "
                             "a name in --out (else in the repo's models), name:version, or a path; same architecture and "
                             "framework (default: none)")
    parser.add_argument("--validation-size", type=int, default=defaults.validation_size,
                        help="training images held out for choosing the best epoch")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the split, initialisation, shuffling and augmentation")
    parser.add_argument("--train-limit", type=int, default=0, help="train on N images only (quick runs; 0: all)")
    parser.add_argument("--test-limit", type=int, default=0, help="evaluate on N test images only (quick runs; 0: all)")
    parser.add_argument("--threads", type=int, default=0, help="framework CPU threads (0: its default)")
    parser.add_argument("--dry-run", action="store_true", help="1 epoch on 1,000 images: checks the pipeline end to end")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", default=str(MODELS_DIR), help="models directory to write into")
    parser.add_argument("--version", type=int, help="model version to write (default: the next free one)")
    parser.add_argument("--force", action="store_true", help="replace the model if --version already exists")
    parser.add_argument("--report-dir", help="evaluation figures and JSON (default: a reports/ directory beside --out)")
    parser.add_argument("--tensorboard", help="TensorBoard log directory (tensorflow only; default: none)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no per-batch progress bar (it is drawn on stderr, and only when stderr is a terminal)")
    parser.set_defaults(handler=train)


def settings_from(args: argparse.Namespace) -> "TrainSettings":  # noqa: F821 - imported lazily
    from training.common import TrainSettings

    settings = TrainSettings(
        architecture=args.arch, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        optimizer=args.optimizer, schedule=args.schedule, validation_size=args.validation_size,
        seed=args.seed, train_limit=args.train_limit, test_limit=args.test_limit, threads=args.threads,
    )
    settings.use_preset(args.augment)
    for key in AUGMENTATION_RANGES:
        value = getattr(args, f"augment_{key}")
        if value is not None:
            setattr(settings, f"augment_{key}", value)
    if args.dry_run:
        settings.epochs, settings.train_limit, settings.test_limit = 1, 1000, 500
    return settings


def train(args: argparse.Namespace) -> int:
    from training.common import IncompatibleInit, VersionExists

    if args.version is not None and args.version < 1:
        return _fail("train", f"--version {args.version}: a version is a positive integer")
    settings = settings_from(args)
    if (problem := settings.augmentation().problem()) is not None:
        field, why = problem
        return _fail("train", f"--augment-{field.replace('_', '-')} {getattr(settings, f'augment_{field}'):g}: {why}")
    out_dir = Path(args.out)
    if args.init_from:
        from contract import store

        try:
            try:
                start = resolve_model(args.init_from, out_dir)
            except FileNotFoundError:  # a name not in --out: the repo's models
                start = resolve_model(args.init_from, MODELS_DIR)
            settings.init_from = str(store.locate(start)[2])
        except FileNotFoundError as exc:
            return _fail("train", f"--init-from {exc}")
    report_dir = Path(args.report_dir) if args.report_dir else out_dir.resolve().parent / "reports"
    if args.framework == "pytorch":
        from training import torch_train as trainer
    else:
        from training import tf_train as trainer  # type: ignore[no-redef]
    kwargs = {"tensorboard_dir": args.tensorboard} if args.framework == "tensorflow" else {}
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        path = trainer.run(settings, args.data_dir, out_dir, report_dir, version=args.version,
                           overwrite=args.force, progress=progress, **kwargs)
    except VersionExists as exc:
        return _fail("train", f"refusing to overwrite: {exc}")
    except IncompatibleInit as exc:
        return _fail("train", str(exc))
    print(path)
    return 0


def add_eda(sub: argparse._SubParsersAction) -> None:
    parser = _subparser(sub, "eda", "exploratory figures and statistics of MNIST",
                        "Label counts, a sample grid, mean digits and pixel statistics of the MNIST files: three "
                        "figures and summary.json into --out, and the summary as JSON on stdout.")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", default=str(REPO_ROOT / "reports" / "eda"), help="directory for the figures and summary.json")
    parser.set_defaults(handler=eda)


def eda(args: argparse.Namespace) -> int:
    from training import eda as exploration

    summary = exploration.run(args.data_dir, Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


def resolve_model(text: str, models_dir: Path) -> Path:
    """A path to a model directory or file, or a model name (optionally `name:version`) under `models_dir`."""
    from contract import store

    path = Path(text)
    if path.exists():
        return path
    name, _, version_text = text.partition(":")
    if store.is_model_name(name) and (models_dir / name).is_dir():
        if not version_text:
            return models_dir / name
        version = store.parse_version(version_text)
        if version is not None and store.model_path(models_dir, name, version).is_file():
            return store.model_path(models_dir, name, version)
        raise FileNotFoundError(f"{text}: {name} has no version {version_text!r} in {models_dir}")
    raise FileNotFoundError(f"{text}: no such path, and no model of that name in {models_dir}")


def add_compare(sub: argparse._SubParsersAction) -> None:
    parser = _subparser(sub, "compare", "agreement of two served models on the MNIST test set",
                        "Run two models through ONNX Runtime on the 10,000 MNIST test images: each one's accuracy and "
                        "how often their labels agree, as JSON. A model is a name in --models-dir (its latest "
                        "version), name:version, or a path to a model directory or model.onnx file.")
    parser.add_argument("first", nargs="?", default="cnn-pytorch", help="first model: name, name:version or path")
    parser.add_argument("second", nargs="?", default="cnn-tensorflow", help="second model: name, name:version or path")
    parser.add_argument("--models-dir", default=str(MODELS_DIR), help="where model names are looked up")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.set_defaults(handler=compare)


def compare(args: argparse.Namespace) -> int:
    from training.compare import compare_models

    try:
        first, second = (resolve_model(text, Path(args.models_dir)) for text in (args.first, args.second))
    except FileNotFoundError as exc:
        return _fail("compare", str(exc))
    print(json.dumps(compare_models(first, second, args.data_dir), indent=2))
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = _subparser(sub, "evaluate", "accuracy of models on MNIST, perturbed MNIST and other handwriting",
                        "Accuracy of every version of each model on the MNIST test set through ONNX Runtime; with "
                        "--robustness also per perturbation (rotation, scale, stroke, noise, blur, and photo-like "
                        "pages through the service's preprocessing) and on a non-MNIST handwritten digit set. "
                        "Writes robustness.json, robustness.md and robustness.png into --out and prints the JSON.")
    parser.add_argument("models", nargs="*", default=["cnn-pytorch", "cnn-tensorflow", "lenet-pytorch", "lenet-tensorflow"],
                        help="models: name (every version), name:version, or path to a model directory or file")
    parser.add_argument("--models-dir", default=str(MODELS_DIR), help="where model names are looked up")
    parser.add_argument("--robustness", action="store_true", help="add the perturbations and the other handwriting")
    parser.add_argument("--limit", type=int, default=1000,
                        help="MNIST test images per perturbation (the clean accuracy always uses all 10,000)")
    parser.add_argument("--other-limit", type=int, default=0, help="non-MNIST digits to read (0: all 1,797)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image choice and the perturbations")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", default=str(REPO_ROOT / "reports" / "robustness"), help="directory for the table and plot")
    parser.set_defaults(handler=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    from training import robustness

    if args.limit < 1 or args.other_limit < 0:
        return _fail("evaluate", f"--limit {args.limit}, --other-limit {args.other_limit}: --limit at least 1, "
                                 "--other-limit 0 (all) or more")
    try:
        models = robustness.resolve_models(args.models, Path(args.models_dir))
    except FileNotFoundError as exc:
        return _fail("evaluate", str(exc))
    result = robustness.run(models, args.data_dir, Path(args.out), robust=args.robustness, limit=args.limit,
                            seed=args.seed, other_limit=args.other_limit)
    print(json.dumps(result, indent=2))
    return 0


COMMANDS = (add_train, add_eda, add_compare, add_evaluate, add_quantize)
