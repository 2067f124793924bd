"""The naive baseline: the server most people write first, kept as the benchmark's yardstick.

A plain `def` handler (FastAPI runs it in its threadpool), pydantic parsing a
`list[list[float]]`, and one `session.run` per request: no batching, no fast JSON,
no binary tensors. uvicorn with one worker, as the service runs.

    python -m bench.naive_server --model-path models/cnn-pytorch/1/model.onnx --port 8100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

IMAGE_SIDE = 28
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class PredictRequest(BaseModel):
    image: list[list[float]]


class PredictResponse(BaseModel):
    label: int
    probabilities: list[float]


def create_app(model_path: Path) -> FastAPI:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    app = FastAPI(title="naive MNIST server")

    @app.post("/predict")
    def predict(request: PredictRequest) -> PredictResponse:
        image = np.asarray(request.image, dtype=np.float32)
        if image.shape != (IMAGE_SIDE, IMAGE_SIDE):
            raise HTTPException(status_code=422, detail=f"image must be 28x28, got {list(image.shape)}")
        (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: image.reshape(1, 1, IMAGE_SIDE, IMAGE_SIDE)})
        return PredictResponse(label=int(probabilities[0].argmax()), probabilities=probabilities[0].tolist())

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__)
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    # No access log: the baseline is the application, not one log line per request.
    uvicorn.run(create_app(args.model_path), host=args.host, port=args.port, workers=1,
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
