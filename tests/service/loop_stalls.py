"""How long each costly step of the largest admitted requests keeps the event loop waiting when it
runs where the server runs it (a worker thread): an asyncio ticker measures the loop's lag while
the step runs, and the least of several repeats is kept, so that another process's use of the CPU
does not count (on a shared machine, the raw lag is mostly other people's work). What remains is
the step's longest hold of the GIL.

    python -m tests.service.loop_stalls
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import orjson
from PIL import Image

from contract.validation import validate_model
from service.api.bodies import decode_v2, input_limits, parse_priced_json
from service.config import Settings
from service.offload import dumps_in_pieces
from service.preprocess import image_to_input
from service.protocol.v1 import render
from service.protocol.v1.images import parse_v1_images
from service.protocol.v1.options import ActivationsOptions
from service.protocol.v2.rest import encode_response
from service.protocol.v2.types import InferOutput, InferResponse
from tests.conftest import MODELS_DIR

REPEATS = 5
TICK_S = 0.001


def steps() -> dict[str, Callable[[], object]]:
    settings = Settings()
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8)
    v2_json = orjson.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [256, 1, 28, 28],
                                        "data": (digits[:, None].astype(np.float32) / 255).round(7).tolist()}]})
    v1_json = orjson.dumps({"images": digits.tolist()})
    session = ort.InferenceSession(str(MODELS_DIR / "cnn-pytorch" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    batch = digits[:48, None].astype(np.float32) / 255
    values = dict(zip(names, session.run(names, {"image": batch})))
    as_json = InferResponse("cnn-pytorch", "1", [InferOutput(n, "FP32", list(v[:12].shape), v[:12]) for n, v in
                                                  values.items()])
    as_binary = InferResponse("cnn-pytorch", "1", [InferOutput(n, "FP32", list(v.shape), v, True) for n, v in
                                                    values.items()])
    layers = validate_model(onnx.load(MODELS_DIR / "cnn-pytorch" / "1" / "model.onnx")).layers
    photo = io.BytesIO()
    Image.fromarray(np.full((4000, 4000), 255, np.uint8)).save(photo, "PNG")
    return {
        "parse V2 JSON, 256 FP32 images (3.8 MB)": lambda: decode_v2(v2_json, None, settings),
        "parse V1 JSON, 256 images (0.8 MB)": lambda: parse_v1_images(parse_priced_json(v1_json, settings),
                                                                      input_limits(settings), None, False),
        "encode V2 JSON, 12 images, every output (23 MB)": lambda: encode_response(as_json, dumps_in_pieces),
        "encode V2 binary, 48 images, every output (31 MB)": lambda: encode_response(as_binary),
        "run cnn on 48 images, every output": lambda: session.run(names, {"image": batch[:48]}),
        "render every layer as PNG": lambda: render.layers(layers, {n: v[:1] for n, v in values.items()},
                                                           ActivationsOptions(encoding="png")),
        "decode a 16-megapixel PNG": lambda: image_to_input(photo.getvalue(), 16_000_000, True, "file[0]"),
    }


async def longest_lag(step: Callable[[], object]) -> float:
    lags: list[float] = []
    running = True

    async def tick() -> None:
        while running:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - started - TICK_S)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    await asyncio.to_thread(step)
    running = False
    await ticker
    return max(lags)


async def measure() -> None:
    for name, step in steps().items():
        holds = [await longest_lag(step) for _ in range(REPEATS)]
        print(f"{name:52s} longest hold {min(holds) * 1000:7.1f} ms (worst of {REPEATS} runs {max(holds) * 1000:.1f})")


if __name__ == "__main__":
    asyncio.run(measure())
