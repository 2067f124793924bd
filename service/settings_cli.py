"""`Settings` as command-line flags: one flag per field, its default and environment variable in
the help, and validation errors as one line naming the setting, the value and what is allowed."""

from __future__ import annotations

import argparse
import json
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from service.config import ENV_PREFIX, Settings


class SettingsRefused(ValueError):
    """A setting's value cannot be used; the message is one line for the operator."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _default_text(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return "true" if default else "false"
    if default is None or default == []:
        return "none"
    if isinstance(default, Path):
        return str(default)
    return json.dumps(default) if isinstance(default, list) else str(default)


def _list_value(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [item.strip() for item in text.split(",") if item.strip()]


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Every Settings field as a flag. Values stay strings (pydantic validates them with the rest);
    booleans are --name / --no-name."""
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        help_text = f"{info.description or name} ({env_name(name)}; default {_default_text(info)})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if annotation is bool:
            parser.add_argument(flag(name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif typing.get_origin(annotation) is list:
            kwargs["type"] = _list_value
        kwargs["metavar"] = name.upper() if "choices" not in kwargs else None
        parser.add_argument(flag(name), **kwargs)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags given (over the environment, over the defaults)."""
    given = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsRefused(_describe(exc, given)) from None
    except SettingsError as exc:  # an environment value that is not JSON where JSON is needed
        raise SettingsRefused(f"{exc}; {_allowed_hint(exc)}") from None


def _allowed_hint(exc: SettingsError) -> str:
    return "list settings take JSON, e.g. '[\"https://a.example\"]'" if "cors_origins" in str(exc) else "see --help"


def _describe(exc: ValidationError, given: dict[str, Any]) -> str:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else "?"
        if name in given:
            source, value = flag(name), given[name]
        else:
            source, value = env_name(name), os.environ.get(env_name(name), error.get("input"))
        if error.get("type") == "extra_forbidden":
            problems.append(f"{source}: unknown setting")
            continue
        problems.append(f"{source}={value}: {error.get('msg', 'invalid')}")
    return "; ".join(problems)
