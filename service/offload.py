"""CPU-bound steps of a request kept off the event loop: large JSON bodies are parsed, and large
responses encoded, in a worker thread; small ones stay inline (a thread hop costs more than they do).

A worker thread still shares the GIL, and orjson holds it for a whole call, so a large response
is encoded in pieces (`dumps_in_pieces`): each numpy array of more than PIECE_VALUES values is
written a slice at a time, and between slices the loop takes the GIL back (the interpreter hands
it over every switch interval, 5 ms). The bytes are exactly what orjson.dumps would write.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import orjson
from starlette.responses import Response

from service.api.responses import JSONBody
from service.jsonio import dumps
from service.priority import lower_current_thread

OFFLOAD_BYTES = 64 * 1024  # bodies and responses below this are handled inline (a few hundred microseconds)
PIECE_VALUES = 16_384  # values per orjson call: about 250 KB of JSON, about a millisecond
WORKERS = 2
_workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="offload", initializer=lower_current_thread)
NUMPY = orjson.OPT_SERIALIZE_NUMPY
Result = TypeVar("Result")


async def call(function: Callable[..., Result], *args: Any, size: int, **kwargs: Any) -> Result:
    """`function(*args, **kwargs)` inline when `size` (the bytes it reads or writes) is small,
    otherwise in a worker thread."""
    if size < OFFLOAD_BYTES:
        return function(*args, **kwargs)
    return await run(function, *args, **kwargs)


async def run(function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """`function(*args, **kwargs)` on the offload threads (fewer and nicer than the default executor's)."""
    return await asyncio.get_running_loop().run_in_executor(_workers, functools.partial(function, *args, **kwargs))


async def json_response(content: Any, size: int, status_code: int = 200) -> Response:
    """A JSON response; `size` is its estimated length (service.admission)."""
    if size < OFFLOAD_BYTES:
        return JSONBody(content, status_code=status_code)
    body = await run(dumps_in_pieces, content)
    return Response(body, status_code=status_code, media_type="application/json")


def json_encoder(size: int) -> Callable[[Any], bytes]:
    """The JSON encoder for a body of about `size` bytes: in pieces when it is large."""
    return dumps if size < OFFLOAD_BYTES else dumps_in_pieces


def dumps_in_pieces(content: Any) -> bytes:
    """orjson.dumps(content, OPT_SERIALIZE_NUMPY), with every large numpy array encoded in slices
    (each a short hold of the GIL). Large arrays are swapped for unguessable marker strings, the
    rest is written in one call, and each marker is replaced by its array's encoding."""
    marker = uuid.uuid4().hex
    arrays: list[np.ndarray] = []
    skeleton = _swap_arrays(content, marker, arrays)
    if not arrays:
        return dumps(content)
    text = dumps(skeleton)
    parts: list[bytes] = []
    position = 0
    for index, array in enumerate(arrays):
        quoted = f'"{marker}{index}"'.encode()
        found = text.index(quoted, position)
        parts.append(text[position:found])
        parts.append(_encode_array(array))
        position = found + len(quoted)
    parts.append(text[position:])
    return b"".join(parts)


def _swap_arrays(value: Any, marker: str, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray) and value.size > PIECE_VALUES:
        arrays.append(value)
        return f"{marker}{len(arrays) - 1}"
    if isinstance(value, dict):
        return {key: _swap_arrays(item, marker, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_swap_arrays(item, marker, arrays) for item in value]
    return value


def _encode_array(array: np.ndarray) -> bytes:
    """The same bytes as orjson.dumps(array): nested lists by the array's shape, one slice at a time."""
    array = np.ascontiguousarray(array)
    if array.size <= PIECE_VALUES:
        return orjson.dumps(array, option=NUMPY)
    if array.ndim == 1:
        pieces = [orjson.dumps(array[start : start + PIECE_VALUES], option=NUMPY)[1:-1]
                  for start in range(0, len(array), PIECE_VALUES)]
    else:
        pieces = [_encode_array(row) for row in array]
    return b"[" + b",".join(pieces) + b"]"
