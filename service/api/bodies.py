"""Request bodies over HTTP: decompression within the body limit, the media type, JSON priced by
the images it can carry before it is parsed, and V1 images from a JSON or multipart body. Large
bodies are parsed, and image files decoded, off the event loop."""

from __future__ import annotations

import asyncio
import functools
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from contract.spec import INPUT_SHAPE
from service import offload
from service.config import Settings
from service.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from service.jsonio import parse_json
from service.priority import lower_current_thread
from service.protocol.v1.images import InputLimits, ParsedImages, check_file_size, decode_files, parse_v1_images
from service.protocol.v2 import model_io
from service.protocol.v2.rest import HEADER_LENGTH, decode_request, split_body
from service.protocol.v2.types import InferRequest

# Image files are decoded by this many threads at once, whatever the number of requests: a decoded
# image can take max_image_pixels x 4 bytes before it is reduced, so this bounds that memory.
DECODE_THREADS = 2
_decoders = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode",
                               initializer=lower_current_thread)
PIXELS = INPUT_SHAPE[-1] * INPUT_SHAPE[-2]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def input_limits(settings: Settings) -> InputLimits:
    return InputLimits(max_images=settings.max_images_per_request, max_encoded_bytes=settings.max_encoded_image_bytes,
                       max_pixels=settings.max_image_pixels, max_request_pixels=settings.max_request_pixels)


def check_json_size(text: bytes, settings: Settings) -> None:
    """Price a JSON body before it is parsed: parsing costs by the objects, arrays and values it
    holds, and a request needs at most 32 arrays and 2 x 784 values per image it may carry
    (max_images_per_request), with some room for the rest. A body of a million `{}`s is refused
    here, at C speed, instead of being parsed and walked."""
    images = settings.max_images_per_request
    containers = text.count(b"{") + text.count(b"[")
    container_limit = 64 + 32 * images
    if containers > container_limit:
        raise PayloadTooLarge(f"JSON body has {containers} objects and arrays, more than the {container_limit} that "
                              f"the max_images_per_request limit of {images} allows")
    values = text.count(b",") + 1
    value_limit = 1024 + 2 * PIXELS * images
    if values > value_limit:
        raise PayloadTooLarge(f"JSON body has {values} values, more than the {value_limit} that the "
                              f"max_images_per_request limit of {images} allows")


def parse_priced_json(text: bytes, settings: Settings) -> Any:
    check_json_size(text, settings)
    return parse_json(text, settings.max_json_depth, error=BadRequest)


def decode_v2(body: bytes, header_length: str | None, settings: Settings) -> InferRequest:
    """A V2 REST body -> InferRequest, its JSON header priced first."""
    check_json_size(split_body(body, header_length)[0], settings)
    return decode_request(body, header_length, settings.max_json_depth + len(INPUT_SHAPE),
                          model_io.input_check(settings.max_images_per_request))


async def read_v2_request(request: Request) -> InferRequest:
    """The V2 inference request in the body (large ones decoded off the event loop)."""
    body = await read_body(request)
    return await offload.call(decode_v2, body, request.headers.get(HEADER_LENGTH), settings_of(request),
                              size=len(body))


async def read_body(request: Request) -> bytes:
    """The request body, decompressed when it came with Content-Encoding gzip or deflate (as
    tritonclient's request_compression_algorithm sends it); the result obeys max_body_bytes too.
    Decompression (up to max_body_bytes out of a few kilobytes) runs off the event loop."""
    body = await request.body()
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {coding} is not supported: send gzip, deflate or identity")
    return await offload.run(inflate, body, coding, settings_of(request).max_body_bytes)


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {coding} data: {exc}") from exc
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds the max_body_bytes limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"{coding} body is truncated")
    return inflated


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_images(request: Request, preprocess: bool | None, single: bool) -> ParsedImages:
    """A V1 body -> images: JSON ({"image"}, {"images"}, {"image_base64"}, {"images_base64"}) or
    multipart/form-data with `file` parts. Decoding image files runs off the event loop."""
    settings = settings_of(request)
    limits = input_limits(settings)
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        raw = await read_body(request)
        body = await offload.call(parse_priced_json, raw, settings, size=len(raw))
        if not isinstance(body, dict):
            raise Unprocessable("request body must be a JSON object")
        unknown = sorted(set(body) - {"image", "images", "image_base64", "images_base64"})
        if unknown:
            raise Unprocessable(f"unknown field {unknown[0]!r}; options go in the query string")
        if "image_base64" in body or "images_base64" in body:
            return await _decode(parse_v1_images, body, limits, preprocess, single)
        return await offload.call(parse_v1_images, body, limits, preprocess, single, size=len(raw))
    if kind == "multipart/form-data":
        return await _read_multipart(request, settings, limits, preprocess, single)
    shown = kind or "none"
    raise UnsupportedMediaType(f"Content-Type {shown} is not accepted: send application/json or multipart/form-data")


async def _read_multipart(request: Request, settings: Settings, limits: InputLimits, preprocess: bool | None,
                          single: bool) -> ParsedImages:
    parts = settings.max_multipart_parts
    try:
        form = await request.form(max_files=parts, max_fields=parts, max_part_size=limits.max_encoded_bytes)
    except (MultiPartException, HTTPException) as exc:  # inside an app, Starlette re-raises it as HTTPException(400)
        message = str(getattr(exc, "detail", None) or getattr(exc, "message", None) or exc)
        if "Too many" in message:
            raise PayloadTooLarge(f"multipart body: {message} (max_multipart_parts limit {parts})") from exc
        if "exceeded maximum size" in message:
            raise PayloadTooLarge(f"multipart body: {message} "
                                  f"(max_encoded_image_bytes limit {limits.max_encoded_bytes})") from exc
        raise BadRequest(f"multipart body: {message}") from exc
    try:
        files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not files:
            raise Unprocessable("multipart body has no 'file' part (send -F file=@digit.png)")
        if single and len(files) > 1:
            raise Unprocessable(f"this endpoint takes one image; got {len(files)} 'file' parts")
        if len(files) > limits.max_images:
            raise PayloadTooLarge(f"{len(files)} files exceed the max_images_per_request limit of {limits.max_images}")
        contents = [(f"file[{index}]", await item.read()) for index, item in enumerate(files)]
    finally:
        await form.close()
    for where, data in contents:
        check_file_size(data, limits, where)
    apply = True if preprocess is None else preprocess
    return ParsedImages(images=await _decode(decode_files, contents, limits, apply), encoded=True)


async def _decode(function: Any, *args: Any) -> Any:
    """Image decoding, on the decoding threads."""
    return await asyncio.get_running_loop().run_in_executor(_decoders, functools.partial(function, *args))
