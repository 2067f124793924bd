"""KServe's model server for the benchmark: a `kserve.Model` running the ONNX file through ONNX Runtime.

Runs inside the KServe environment (bench/.anchors/kserve). KServe's own flags are accepted as they
are (`--http_port`, `--grpc_port`, `--model_name`, `--workers`, `--enable_latency_logging`, ...: its
`model_server.parser`); this script adds `--model_path`. V2 over REST, with KServe's support of the
binary tensor extension (Inference-Header-Content-Length) both ways. Unless `--log_config_file` is
given, KServe's own logging configuration less its per-request lines (access log, `kserve.trace`).

    bench/.anchors/kserve/bin/python -m bench.anchors.kserve_server --model_path models/cnn-pytorch/1/model.onnx \
        --model_name cnn-pytorch --http_port 8200 --grpc_port 8201
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import onnxruntime as ort
from kserve import (
    InferOutput,
    InferRequest,
    InferResponse,
    Model,
    ModelServer,
    model_server,
)
from kserve import logging as kserve_logging
from kserve.errors import InvalidInput
from kserve.utils.utils import generate_uuid

INPUT_NAME = "image"
DEFAULT_OUTPUT = "probabilities"


class OnnxRuntimeModel(Model):
    def __init__(self, name: str, model_path: str) -> None:
        super().__init__(name)
        self.model_path = model_path
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.model_path, providers=["CPUExecutionProvider"])
        self.output_names = {output.name for output in self.session.get_outputs()}
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        images = next((item.as_numpy() for item in payload.inputs if item.name == INPUT_NAME), None)
        if images is None:
            raise InvalidInput(f"the request has no input named {INPUT_NAME!r}")
        names = [output.name for output in payload.request_outputs] if payload.request_outputs else [DEFAULT_OUTPUT]
        unknown = sorted(set(names) - self.output_names)
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown}; the model has {sorted(self.output_names)}")
        values = self.session.run(names, {INPUT_NAME: images.astype(np.float32, copy=False)})
        # numpy data: InferResponse.to_rest encodes each output as JSON or binary, as the request asked
        outputs = [InferOutput(name=name, shape=list(value.shape), datatype="FP32", data=value)
                   for name, value in zip(names, values)]
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or generate_uuid(),
                             requested_outputs=payload.request_outputs, use_binary_outputs=payload.use_binary_outputs)


def quiet_log_config() -> dict:
    """KServe's logging configuration without the lines it writes per request (the access log and the
    `kserve.trace` timings), as the other servers in the benchmark run."""
    config = copy.deepcopy(kserve_logging.KSERVE_LOG_CONFIG)
    for name in ("uvicorn.access", kserve_logging.KSERVE_TRACE_LOGGER_NAME):
        config["loggers"][name]["level"] = "WARNING"
    return config


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    if args.configure_logging and args.log_config_file is None:
        kserve_logging.configure_logging(quiet_log_config())
    model = OnnxRuntimeModel(args.model_name, args.model_path)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
