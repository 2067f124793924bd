"""The tensor datatypes this server accepts for its input, in one table: the wire name, the
little-endian numpy dtype, and the gRPC `InferTensorContents` field that carries typed data.
The OpenAPI enum and every 'use one of' message come from this table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import BadRequest


@dataclass(frozen=True)
class Datatype:
    name: str
    dtype: np.dtype
    contents_field: str | None  # None: only raw bytes carry it over gRPC (FP16 has no typed field)
    scale_0_255: bool = False  # integer pixels: divided by 255 on the way in


DATATYPES: dict[str, Datatype] = {
    datatype.name: datatype
    for datatype in (
        Datatype("FP32", np.dtype("<f4"), "fp32_contents"),
        Datatype("FP16", np.dtype("<f2"), None),
        Datatype("FP64", np.dtype("<f8"), "fp64_contents"),
        Datatype("UINT8", np.dtype("u1"), "uint_contents", scale_0_255=True),
    )
}
OUTPUT_DATATYPE = "FP32"
OUTPUT_DTYPE = np.dtype("<f4")


def datatype_names() -> list[str]:
    return list(DATATYPES)


def lookup(name: object, where: str) -> Datatype:
    datatype = DATATYPES.get(name) if isinstance(name, str) else None
    if datatype is None:
        shown = repr(name) if isinstance(name, str) else f"of type {type(name).__name__}"
        raise BadRequest(f"{where}: datatype {shown} is not supported (use one of {', '.join(DATATYPES)})")
    return datatype
