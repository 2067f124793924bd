"""Regenerate service/grpc/generated/ from the vendored Triton protos in service/grpc/proto/.

    python -m service.grpc.codegen            # rewrite service/grpc/generated/
    python -m service.grpc.codegen --out DIR  # somewhere else

Needs grpcio-tools (the dev extra). protoc writes top-level imports (`import model_config_pb2`);
the only change made to its output is turning those into imports from this package, as
tritonclient does for the same files. Versions are in service/grpc/proto/README.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent / "proto"
GENERATED_DIR = Path(__file__).resolve().parent / "generated"
PACKAGE = "service.grpc.generated"
PROTOS = ("grpc_service.proto", "model_config.proto")
# protoc's outputs that are kept: model_config.proto declares no service, so no model_config_pb2_grpc.py.
OUTPUTS = ("grpc_service_pb2.py", "grpc_service_pb2.pyi", "grpc_service_pb2_grpc.py", "model_config_pb2.py",
           "model_config_pb2.pyi")
_TOP_LEVEL_IMPORT = re.compile(r"^import (grpc_service_pb2|model_config_pb2) as ", re.MULTILINE)


def run_protoc(out_dir: Path, *extra_args: str) -> None:
    """grpcio-tools' protoc (a dev-only tool, not needed to serve), in a child process: in a process
    that has also loaded another libprotobuf (TensorFlow's, ONNX's) the in-process one can crash."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", *extra_args, *PROTOS]
    completed = subprocess.run(argv, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"protoc failed with status {completed.returncode}: {' '.join(argv)}\n{completed.stderr}")


def descriptor_set(out_file: Path) -> bytes:
    """The vendored protos compiled to a FileDescriptorSet (what the generated modules embed)."""
    run_protoc(out_file.parent, f"--descriptor_set_out={out_file}")
    return out_file.read_bytes()


def generate(out_dir: Path) -> list[Path]:
    with tempfile.TemporaryDirectory() as raw:
        raw_dir = Path(raw)
        run_protoc(raw_dir, f"--python_out={raw_dir}", f"--pyi_out={raw_dir}", f"--grpc_python_out={raw_dir}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            text = (raw_dir / name).read_text()
            text = _TOP_LEVEL_IMPORT.sub(rf"from {PACKAGE} import \1 as ", text)
            (out_dir / name).write_text(text)
            written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=GENERATED_DIR, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
