"""Query options of the page's insight operations (attribution, unit inspection, frameworks
compared, input check), validated once by the route and shown in the OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.protocol.v1.options import INCLUDE_INPUT, PREPROCESS

DIGIT = "a digit, 0-9"


class _Options(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AttributionOptions(_Options):
    target: int | None = Field(None, ge=0, le=9, description="the class explained (default: the predicted one)")
    versus: int | None = Field(None, ge=0, le=9, description="explain target against this class: the gradient of "
                                                             "their difference ('why 9 and not 4')")
    objective: Literal["logit", "probability"] = Field("logit", description="differentiate the class's logit (the "
                                                                            "score before softmax) or its probability")
    preprocess: bool | None = Field(None, description=PREPROCESS)
    include_input: bool = Field(True, description=INCLUDE_INPUT)

    @model_validator(mode="after")
    def _different_classes(self) -> "AttributionOptions":
        if self.versus is not None and self.versus == self.target:
            raise ValueError("versus must differ from target")
        return self


class InspectOptions(_Options):
    layer: str | None = Field(None, min_length=1, max_length=64, description="the layer, e.g. conv3 or fc1 (default: "
                                                                             "the first)")
    unit: int = Field(0, ge=0, le=4095, description="a spatial layer's channel, or a dense layer's element")
    at: str | None = Field(None, pattern=r"^\d{1,2},\d{1,2}$", description="row,column of the unit in its feature "
                                                                         "map (default: where the channel is largest)")
    preprocess: bool | None = Field(None, description=PREPROCESS)

    @property
    def position(self) -> tuple[int | None, int | None]:
        if self.at is None:
            return None, None
        row, column = self.at.split(",")
        return int(row), int(column)


class CompareOptions(_Options):
    models: str | None = Field(None, min_length=3, max_length=200,
                               description="two models of one architecture, comma-separated, each optionally "
                                           "name:version (default: the default model and the model of the other "
                                           "framework with its architecture)")
    target: int | None = Field(None, ge=0, le=9, description="the class whose saliency maps are compared (default: "
                                                             "the first model's prediction)")
    preprocess: bool | None = Field(None, description=PREPROCESS)


class InputCheckOptions(_Options):
    preprocess: bool | None = Field(None, description=PREPROCESS)
