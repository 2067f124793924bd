"""A minimal Open Inference Protocol server for the benchmark's tests: V2 JSON infer through ONNX
Runtime, answering right or, with --lie, wrong in a chosen way, so the benchmark's check of an
anchor's answers can be tested against a real process on loopback.

    python tests/fake_v2_server.py --model-path models/cnn-pytorch/1/model.onnx --port 8500 --lie swap
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort

LIES = ("none", "swap", "nudge", "garble")


def corrupt(probabilities: np.ndarray, lie: str) -> np.ndarray:
    """swap: the top two classes trade places (wrong labels); nudge: every value off by 1e-3 (same labels)."""
    if lie == "swap":
        order = np.argsort(probabilities, axis=1)
        rows = np.arange(len(probabilities))
        swapped = probabilities.copy()
        swapped[rows, order[:, -1]], swapped[rows, order[:, -2]] = probabilities[rows, order[:, -2]], \
            probabilities[rows, order[:, -1]]
        return swapped
    if lie == "nudge":
        return probabilities + np.float32(1e-3) * np.where(np.arange(10) % 2 == 0, 1, -1).astype(np.float32)
    return probabilities


def make_handler(session: ort.InferenceSession, lie: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200 if self.path.endswith("/ready") else 404, b"{}")

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            tensor = request["inputs"][0]
            images = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            (probabilities,) = session.run(["probabilities"], {"image": images})
            probabilities = corrupt(probabilities, lie)
            if lie == "garble":
                self._send(200, b'{"outputs": "not a list"}')
                return
            output = {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
                      "data": probabilities.ravel().tolist()}
            self._send(200, json.dumps({"model_name": "fake", "outputs": [output]}).encode())

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lie", choices=LIES, default="none")
    args = parser.parse_args()
    session = ort.InferenceSession(args.model_path, providers=["CPUExecutionProvider"])
    ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(session, args.lie)).serve_forever()


if __name__ == "__main__":
    main()
