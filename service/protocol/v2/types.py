"""Typed Open Inference Protocol requests and responses, apart from the transport: the REST codec
and the gRPC servicer both build and read these (as KServe's infer_type does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Parameters of Triton extensions this server does not implement: ignoring them would return
# something other than what the client asked for.
UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # of the datatype's dtype, already in `shape`
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False  # REST: raw bytes after the JSON header (Triton's binary tensor extension)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None  # None: every output of the model
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_outputs_by_default(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


@dataclass
class InferOutput:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    binary: bool = False


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
