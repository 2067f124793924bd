"""Each V1 operation's query options, validated once (pydantic) by the route and shown in the
OpenAPI document from the same declaration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PREPROCESS = "MNIST-style preprocessing (default: on for image files, off for arrays)"
INCLUDE_INPUT = "return the 28x28 input(s) the model saw"
TOP_K = "how many ranked labels to return"


class _Options(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PredictOptions(_Options):
    preprocess: bool | None = Field(None, description=PREPROCESS)
    include_input: bool = Field(False, description=INCLUDE_INPUT)
    top_k: int = Field(3, ge=1, le=10, description=TOP_K)


class TensorEncoding(_Options):
    encoding: Literal["json", "base64", "png"] = Field("json", description="how tensor values are sent")
    dtype: Literal["float32", "float16"] = Field("float32", description="the base64 encoding's float type")
    bins: int = Field(20, ge=1, le=256, description="histogram bins")


class ActivationsOptions(TensorEncoding):
    layers: str | None = Field(None, description="comma-separated layer names (default: all)")
    include_input: bool = Field(True, description=INCLUDE_INPUT)
    preprocess: bool | None = Field(None, description=PREPROCESS)
    top_k: int = Field(3, ge=1, le=10, description=TOP_K)


class WeightsOptions(TensorEncoding):
    pass


class ExplainOptions(_Options):
    patch: int = Field(5, ge=1, le=28, description="side of the square occluding patch, pixels")
    stride: int = Field(2, ge=1, le=28, description="step between patch positions, pixels")
    target: int | None = Field(None, ge=0, le=9, description="class whose probability is watched (default: predicted)")
    fill: float = Field(0.0, ge=0.0, le=1.0, description="value the patch is filled with")
    preprocess: bool | None = Field(None, description=PREPROCESS)
    include_input: bool = Field(True, description=INCLUDE_INPUT)
