"""MLServer's custom runtime for the benchmark: the ONNX file through ONNX Runtime with its defaults.

Runs inside the MLServer environment (bench/.anchors/mlserver). The model-settings.json that the
benchmark writes names this class as `implementation` and the ONNX file as `parameters.uri`;
adaptive batching (max_batch_size, max_batch_time) is MLServer's, set in the same file.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse

INPUT_NAME = "image"
DEFAULT_OUTPUT = "probabilities"


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        self._session = ort.InferenceSession(self.settings.parameters.uri, providers=["CPUExecutionProvider"])
        self._output_names = {output.name for output in self._session.get_outputs()}
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = next((NumpyCodec.decode_input(item) for item in payload.inputs if item.name == INPUT_NAME), None)
        if images is None:
            raise InferenceError(f"the request has no input named {INPUT_NAME!r}")
        names = [output.name for output in payload.outputs] if payload.outputs else [DEFAULT_OUTPUT]
        unknown = sorted(set(names) - self._output_names)
        if unknown:
            raise InferenceError(f"unknown outputs {unknown}; the model has {sorted(self._output_names)}")
        values = self._session.run(names, {INPUT_NAME: images.astype("float32", copy=False)})
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(names, values)])
