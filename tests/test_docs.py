"""The documentation holds together: every relative link of README.md and docs/*.md reaches an
existing file (and heading, for a #fragment), docs/operations.md's table lists every setting with
its default, and docs/limits.md names every limit setting with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import Settings
from tests.conftest import REPO_ROOT

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
BATCHER_SETTINGS = ("max_batch_size", "max_queue_delay_ms")  # how batches are formed, not limits: operations.md
LIMIT_SETTINGS = [name for name in Settings.model_fields if name not in BATCHER_SETTINGS and (
                  name.startswith("max_") or name.endswith("_timeout_s") or name == "shutdown_grace_s")]


def without_code(text: str) -> str:
    return FENCED.sub("", text)


def anchors(document: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    ids = set()
    for heading in HEADING.findall(without_code(document.read_text())):
        text = re.sub(r"[`*_]", "", heading.strip().lower())
        ids.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return ids


def relative_links(document: Path) -> list[str]:
    found = [a or b for a, b in LINK.findall(without_code(document.read_text()))]
    return [link for link in found if not re.match(r"^[a-z]+:", link)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_relative_links_reach_a_file_and_heading(document: Path) -> None:
    broken = []
    for link in relative_links(document):
        path_part, _, fragment = link.partition("#")
        target = (document.parent / path_part).resolve() if path_part else document
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.relative_to(REPO_ROOT)}")
    assert broken == []


def test_the_readme_lists_every_document() -> None:
    listed = set(relative_links(REPO_ROOT / "README.md"))
    missing = [doc.name for doc in DOCUMENTS[1:] if f"docs/{doc.name}" not in listed]
    assert missing == []


def default_text(name: str) -> str:
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, bool):
        return "true" if default else "false"
    if default is None or default == []:
        return "none"
    return str(default)


def test_the_operations_table_lists_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", (REPO_ROOT / "docs" / "operations.md").read_text(), re.MULTILINE))
    assert sorted(rows) == sorted(Settings.model_fields)
    for name, cell in rows.items():
        expected = "the repo's `models/`" if name == "models_dir" else f"`{default_text(name)}`"
        assert cell.strip() == expected, name


def test_limits_doc_names_every_limit_with_its_default() -> None:
    rows = re.findall(r"^\|[^|\n]*\| `([a-z_]+)` \(`MNIST_SERVE_[A-Z_]+`\) \| ([^|]+) \|", (REPO_ROOT / "docs" / "limits.md").read_text(), re.MULTILINE)
    documented = {name: cell.strip() for name, cell in rows}
    assert sorted(documented) == sorted(LIMIT_SETTINGS)
    for name, cell in documented.items():
        assert cell.split()[0] == default_text(name), (name, cell)
