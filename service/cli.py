"""`mnist-serve`: serve the models, and (where those packages are installed) train, eda, compare,
bench. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each package adds its own subcommands; the serving image installs only `service`.
COMMAND_MODULES = ("training.commands", "bench.commands")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from service.settings_cli import add_settings_flags

    parser = sub.add_parser(
        "serve", help="serve the models under the models directory",
        description="Serve every model under --models-dir over HTTP (V1 and the Open Inference Protocol). "
                    "Each flag can also be set as the environment variable shown; a flag wins.",
    )
    add_settings_flags(parser)
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from service.server import refuse, run_server
    from service.settings_cli import SettingsRefused, settings_from

    try:
        settings = settings_from(args)
    except SettingsRefused as exc:
        return refuse(f"invalid setting: {exc}")
    return run_server(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-serve", description="Handwritten-digit CNNs: serve them, train them, measure them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a serving-only install: those commands are not there
            continue
        for add in module.COMMANDS:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
