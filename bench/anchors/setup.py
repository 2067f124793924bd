"""Build the anchors' virtual environments: one per server, under bench/.anchors/ (gitignored).

    mnist-serve bench --setup-anchors                  # all three
    python -m bench.anchors.setup triton kserve        # some (the standard library is enough to run this)
    python -m bench.anchors.setup --force mlserver     # rebuild

MLServer, KServe and PyTriton conflict with each other and with this project (MLServer 1.7 wants FastAPI
below 0.116, KServe 0.21 Starlette 1.3 or later, PyTriton numpy below 2), so each gets its own environment,
installed from
bench/anchors/requirements/<environment>.txt. A finished build leaves `anchor.json` in its environment
(versions, seconds, bytes); the benchmark skips an anchor whose environment has none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
ANCHORS_ROOT = REPO_ROOT / "bench" / ".anchors"
REQUIREMENTS_DIR = HERE / "requirements"
MARKER = "anchor.json"
SETUP_COMMAND = "mnist-serve bench --setup-anchors"

# anchor (results key) -> its environment: the folder under ANCHORS_ROOT and the requirements file's stem
ENVIRONMENTS = {"mlserver": "mlserver", "kserve": "kserve", "triton": "pytriton"}
# the distribution whose version names each anchor in the report
PACKAGES = {"mlserver": "mlserver", "kserve": "kserve", "triton": "nvidia-pytriton"}
VERSIONS_SCRIPT = ("import importlib.metadata as m, json, sys\n"
                   "print(json.dumps({name: m.version(name) for name in sys.argv[1:]}))")


def environment_dir(anchor: str, root: Path = ANCHORS_ROOT) -> Path:
    return root / ENVIRONMENTS[anchor]


def requirements_file(anchor: str) -> Path:
    return REQUIREMENTS_DIR / f"{ENVIRONMENTS[anchor]}.txt"


def requirements_digest(anchor: str) -> str:
    return hashlib.sha256(requirements_file(anchor).read_bytes()).hexdigest()


def venv_python(directory: Path) -> Path:
    return directory / "bin" / "python"


def directory_bytes(directory: Path) -> int:
    return sum(path.lstat().st_size for path in directory.rglob("*") if path.is_file() and not path.is_symlink())


def default_base_python() -> str:
    """The interpreter this one was made from (outside any virtual environment)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def read_marker(anchor: str, root: Path = ANCHORS_ROOT) -> dict | None:
    path = environment_dir(anchor, root) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build(anchor: str, base_python: str, root: Path = ANCHORS_ROOT, force: bool = False) -> dict:
    """Create (or, with `force`, recreate) one anchor's environment; returns its marker."""
    directory = environment_dir(anchor, root)
    marker = read_marker(anchor, root)
    if marker is not None and not force and marker.get("requirements_sha256") == requirements_digest(anchor):
        print(f"{anchor}: {directory} is up to date (--force rebuilds it)", flush=True)
        return marker
    if directory.exists():
        shutil.rmtree(directory)
    print(f"{anchor}: building {directory} from {requirements_file(anchor)}", flush=True)
    started = time.monotonic()
    subprocess.run([base_python, "-m", "venv", str(directory)], check=True)
    python = str(venv_python(directory))
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                    str(requirements_file(anchor))], check=True)
    names = [PACKAGES[anchor], "onnxruntime"]
    versions = json.loads(subprocess.run([python, "-c", VERSIONS_SCRIPT, *names], check=True, capture_output=True,
                                         text=True).stdout)
    marker = {
        "anchor": anchor, "versions": versions, "requirements_sha256": requirements_digest(anchor),
        "python": subprocess.run([python, "-c", "import platform; print(platform.python_version())"], check=True,
                                 capture_output=True, text=True).stdout.strip(),
        "seconds": round(time.monotonic() - started, 1), "bytes": directory_bytes(directory),
        "built": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return marker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anchors.setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("anchors", nargs="*", metavar="ANCHOR", help=f"some of {', '.join(ENVIRONMENTS)} (default: all)")
    parser.add_argument("--python", default=default_base_python(),
                        help="the interpreter the environments are made from (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=ANCHORS_ROOT, help="where they go (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild environments that are up to date")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.anchors) - set(ENVIRONMENTS))
    if unknown:
        parser.error(f"unknown anchor(s) {', '.join(unknown)}; choose from {', '.join(ENVIRONMENTS)}")
    if shutil.which(args.python) is None:
        parser.error(f"--python {args.python}: no such interpreter")
    return setup(args.anchors or list(ENVIRONMENTS), args.python, args.root, args.force)


def setup(anchors: list[str], base_python: str, root: Path = ANCHORS_ROOT, force: bool = False) -> int:
    """Build each anchor's environment; one that fails is left without its marker (the benchmark skips it)."""
    markers, failed = {}, []
    for anchor in anchors:
        try:
            markers[anchor] = build(anchor, base_python, root, force)
        except subprocess.CalledProcessError as error:
            failed.append(anchor)
            print(f"{anchor}: build failed ({' '.join(map(str, error.cmd[:4]))} ... exited with {error.returncode})",
                  file=sys.stderr, flush=True)
    print("\n| anchor | versions | build time | size |\n|---|---|---:|---:|")
    for anchor, marker in markers.items():
        versions = ", ".join(f"{name} {version}" for name, version in marker["versions"].items())
        print(f"| {anchor} | {versions} | {marker['seconds']:.0f} s | {marker['bytes'] / 2**20:,.0f} MiB |")
    for anchor in failed:
        print(f"| {anchor} | build failed | | |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
