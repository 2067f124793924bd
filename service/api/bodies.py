"""Request bodies over HTTP: decompression within the body limit, the media type, and V1 images
from a JSON or multipart body."""

from __future__ import annotations

import asyncio
import zlib

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from service.config import Settings
from service.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from service.jsonio import parse_json
from service.protocol.v1.images import InputLimits, ParsedImages, file_to_image, parse_v1_images


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def input_limits(settings: Settings) -> InputLimits:
    return InputLimits(max_images=settings.max_images_per_request, max_encoded_bytes=settings.max_encoded_image_bytes,
                       max_pixels=settings.max_image_pixels)


async def read_body(request: Request) -> bytes:
    """The request body, decompressed when it came with Content-Encoding gzip or deflate (as
    tritonclient's request_compression_algorithm sends it); the result obeys max_body_bytes too."""
    body = await request.body()
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {coding} is not supported: send gzip, deflate or identity")
    limit = settings_of(request).max_body_bytes
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
        body = parse_json(await read_body(request), settings.max_json_depth, error=BadRequest)
        if not isinstance(body, dict):
            raise Unprocessable("request body must be a JSON object")
        unknown = sorted(set(body) - {"image", "images", "image_base64", "images_base64"})
        if unknown:
            raise Unprocessable(f"unknown field {unknown[0]!r}; options go in the query string")
        if "image_base64" in body or "images_base64" in body:
            return await asyncio.to_thread(parse_v1_images, body, limits, preprocess, single)
        return parse_v1_images(body, limits, preprocess, single)
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
        contents = [await item.read() for item in files]
    finally:
        await form.close()
    apply = True if preprocess is None else preprocess

    def decode() -> np.ndarray:
        return np.stack([file_to_image(data, limits, apply, f"file[{index}]") for index, data in enumerate(contents)])

    return ParsedImages(images=await asyncio.to_thread(decode), encoded=True)
