"""NVIDIA Triton for the benchmark, through PyTriton: the ONNX file through ONNX Runtime in a Python
inference callable, Triton's HTTP front end and dynamic batcher in front of it.

Runs inside the PyTriton environment (bench/.anchors/pytriton). The tritonserver binary that PyTriton
ships loads libpython: the benchmark puts this environment's base Python's library directory on
LD_LIBRARY_PATH, as PyTriton's installation guide asks. Settings: max_batch_size 256 (the largest
request the benchmark sends; Triton refuses a request larger than it), dynamic batching with
Triton's default queue delay (0: take what is queued), one model instance; HTTP on 127.0.0.1,
gRPC and metrics on the ports given.

    LD_LIBRARY_PATH=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))") \
    bench/.anchors/pytriton/bin/python -m bench.anchors.pytriton_server \
        --model-path models/cnn-pytorch/1/model.onnx --model-name cnn-pytorch --http-port 8300
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
NUM_CLASSES = 10
MAX_BATCH_SIZE = 256


def make_infer_fn(session: ort.InferenceSession):
    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: image})
        return {OUTPUT_NAME: probabilities}

    return infer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.anchors.pytriton_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-name", default="cnn-pytorch")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args(argv)

    session = ort.InferenceSession(args.model_path, providers=["CPUExecutionProvider"])
    config = TritonConfig(http_address=args.host, http_port=args.http_port, grpc_address=args.host,
                          grpc_port=args.grpc_port, metrics_address=args.host, metrics_port=args.metrics_port)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=make_infer_fn(session),
            inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(1, 28, 28))],
            outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(NUM_CLASSES,))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=DynamicBatcher()),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
