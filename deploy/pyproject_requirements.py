"""Print the requirements of this project and of the extras named, one a line.

The Dockerfile installs these in a layer of their own before it copies the source, so that an
edit to service/ or training/ does not reinstall ONNX Runtime, torch or TensorFlow. Extras that
name the project itself ("mnist-serve[train]") are expanded; the project is never listed.
Standard library only: it runs on the bare base image's Python.

    python pyproject_requirements.py pyproject.toml cpu,torch > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF_REFERENCE = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*\[(?P<extras>[^\]]*)\]\s*$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_extras(text: str) -> list[str]:
    return [extra.strip() for extra in text.split(",") if extra.strip()]


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The base dependencies and those of `extras`, self-references expanded, in order, once each."""
    own_name = normalise(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    lines: list[str] = list(project.get("dependencies", []))
    pending, expanded = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in expanded:
            continue
        if extra not in optional:
            raise ValueError(f"unknown extra {extra!r}; pyproject.toml has {sorted(optional)}")
        expanded.add(extra)
        for requirement in optional[extra]:
            match = SELF_REFERENCE.match(requirement)
            if match and normalise(match["name"]) == own_name:
                pending.extend(split_extras(match["extras"]))
            else:
                lines.append(requirement)
    return list(dict.fromkeys(lines))


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    project = tomllib.loads(Path(argv[0]).read_text())["project"]
    extras = split_extras(argv[1]) if len(argv) == 2 else []
    try:
        print("\n".join(requirements(project, extras)))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
