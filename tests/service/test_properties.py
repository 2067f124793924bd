"""Property-based tests (hypothesis) of the request decoders and validators: whatever the input,
they return a valid batch (float32, the contract's shape, values in [0, 1]) or raise a
ServiceError with a 4xx status. Any other exception would be a 500 for the client. Each strategy
mixes valid requests with damaged ones, and each test asserts that a minimum share was accepted:
a decoder that refused everything would fail."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from contract.spec import INPUT_NAME, INPUT_SHAPE, LOGITS, PROBABILITIES
from service.errors import ServiceError
from service.jsonio import json_depth, parse_json
from service.preprocess import SIZE, decode_image, image_to_input, mnist_style
from service.protocol.v1.images import InputLimits, array_to_image, decode_base64_image, parse_v1_images
from service.protocol.v2 import model_io
from service.protocol.v2.rest import HEADER_LENGTH, decode_request
from tests.service.payloads import decompression_bomb

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = InputLimits(max_images=4, max_encoded_bytes=64 * 1024, max_pixels=256 * 256)
OUTPUT_NAMES = (LOGITS, PROBABILITIES, "conv1")
MAX_DEPTH = 6


@dataclass
class Tally:
    """How many generated cases a decoder accepted: asserting a minimum share proves the strategy
    reaches the accepting path, so the assertions made on accepted results really run."""

    accepted: int = 0
    refused: int = 0

    def outcome(self, call: Callable[[], Any]) -> Any:
        """The call's result, or None when it raised a client error; any other exception fails the test."""
        try:
            result = call()
        except ServiceError as error:
            assert 400 <= error.status_code < 500, f"{type(error).__name__} has status {error.status_code}"
            assert error.message
            self.refused += 1
            return None
        self.accepted += 1
        return result

    def assert_accepts(self, at_least: float) -> None:
        total = self.accepted + self.refused
        assert total and self.accepted / total >= at_least, f"accepted {self.accepted} of {total}"


def outcome(call: Callable[[], Any]) -> Any:
    return Tally().outcome(call)


def assert_valid_images(images: np.ndarray) -> None:
    assert images.dtype == np.float32
    assert images.shape[-2:] == (SIZE, SIZE)
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def true_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    return 0


# ---- strategies ---------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=8))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=30)
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])
pixel_scalars = st.integers(-300, 300) | st.floats(-2.0, 2.0) | non_finite | st.booleans() | st.none() | st.text(max_size=3)
valid_int_images = hnp.arrays(np.int64, (SIZE, SIZE), elements=st.integers(0, 255)).map(lambda a: a.tolist())
valid_float_images = hnp.arrays(np.float64, (SIZE, SIZE), elements=st.floats(0.0, 1.0)).map(lambda a: a.tolist())


@st.composite
def image_like(draw: st.DrawFn) -> Any:
    """Valid 28x28 images half the time; otherwise nearly valid ones, or any JSON at all."""
    kind = draw(st.sampled_from(["valid-ints", "valid-floats", "ints", "floats", "mixed", "ragged", "any"]))
    if kind == "valid-ints":
        return draw(valid_int_images)
    if kind == "valid-floats":
        return draw(valid_float_images)
    if kind == "ints":
        return draw(hnp.arrays(np.int64, (SIZE, SIZE), elements=st.integers(-5, 260))).tolist()
    if kind == "floats":
        return draw(hnp.arrays(np.float64, (SIZE, SIZE), elements=st.floats(-0.5, 1.5) | non_finite)).tolist()
    if kind == "mixed":
        rows = [[0] * SIZE for _ in range(SIZE)]
        row, col = draw(st.integers(0, SIZE - 1)), draw(st.integers(0, SIZE - 1))
        rows[row][col] = draw(pixel_scalars)
        return rows
    if kind == "ragged":
        return [[0] * draw(st.integers(0, 30)) for _ in range(draw(st.integers(0, 30)))]
    return draw(json_values)


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """Real image files of random sizes and formats, sometimes truncated or with a flipped byte."""
    height, width = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1"]))
    fmt = draw(st.sampled_from(["PNG", "BMP", "GIF", "JPEG", "TIFF", "WEBP"]))
    assume(not (fmt == "JPEG" and mode == "RGBA"))
    pixels = draw(hnp.arrays(np.uint8, (height, width, 4), elements=st.integers(0, 255)))
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    return data


# ---- JSON ----------------------------------------------------------------------------------

@PROPERTY_SETTINGS
@given(json_values, st.integers(1, 8))
@example([1, [[[[[[[[1]]]]]]]]], 6)
@example({"images": [0, {"a": {"b": {"c": {"d": {"e": 1}}}}}]}, 4)
def test_json_depth_flags_exactly_the_values_deeper_than_the_limit(value: Any, limit: int) -> None:
    depth = json_depth(value, limit)
    assert (depth > limit) == (true_depth(value) > limit)
    if true_depth(value) <= limit:
        assert depth == true_depth(value) or (depth == 1 and not isinstance(value, (dict, list)))


def test_parse_json_returns_shallow_json_or_a_client_error() -> None:
    tally = Tally()

    @PROPERTY_SETTINGS
    @given(st.binary(max_size=200) | json_values.map(orjson.dumps)
           | st.sampled_from([b"NaN", b"[1e400]", b"", b"  ", b"{", b"\xff"]))
    def check(body: bytes) -> None:
        parsed = tally.outcome(lambda: parse_json(body, MAX_DEPTH))
        if parsed is not None:
            assert true_depth(parsed) <= MAX_DEPTH
            assert orjson.loads(body) == parsed

    check()
    tally.assert_accepts(at_least=0.3)


# ---- V1 arrays -----------------------------------------------------------------------------

def test_array_to_image_accepts_only_in_range_28x28_numbers() -> None:
    tally = Tally()

    @PROPERTY_SETTINGS
    @given(image_like())
    def check(value: Any) -> None:
        image = tally.outcome(lambda: array_to_image(value, "image"))
        if image is None:
            return
        assert_valid_images(image[None])
        source = np.asarray(value)
        scale = 255.0 if source.dtype.kind in "iu" else 1.0
        np.testing.assert_allclose(image, source / scale, rtol=1e-6, atol=1e-7)

    check()
    tally.assert_accepts(at_least=0.2)


@st.composite
def v1_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body half the time (one image field, the right count); otherwise any mix of fields."""
    if draw(st.booleans()):
        key = draw(st.sampled_from(["image", "images"]))
        image = valid_int_images | valid_float_images
        return {key: draw(image) if key == "image" else draw(st.lists(image, min_size=1, max_size=LIMITS.max_images))}
    return draw(st.dictionaries(st.sampled_from(["image", "images", "image_base64", "images_base64", "other"]),
                                image_like() | st.lists(image_like(), max_size=6) | st.text(max_size=40), max_size=3))


def test_parse_v1_images_returns_a_valid_batch_or_a_client_error() -> None:
    tally = Tally()

    @PROPERTY_SETTINGS
    @given(v1_bodies(), st.sampled_from([None, True, False]), st.booleans())
    def check(body: dict[str, Any], preprocess: bool | None, single: bool) -> None:
        parsed = tally.outcome(lambda: parse_v1_images(body, LIMITS, preprocess, single))
        if parsed is None:
            return
        assert_valid_images(parsed.images)
        assert 1 <= len(parsed.images) <= (1 if single else LIMITS.max_images)

    check()
    tally.assert_accepts(at_least=0.2)


# ---- V2 ------------------------------------------------------------------------------------

V2_DTYPES = {"FP32": "<f4", "FP16": "<f2", "FP64": "<f8", "UINT8": "u1"}
V2_DAMAGE = ["none", "none", "none", "name", "datatype", "shape", "count", "size", "truncate", "header-length",
             "outputs", "id", "extra-bytes"]


@dataclass
class V2Case:
    body: bytes
    header_length: str | None
    expected: np.ndarray  # the batch a valid request must decode to
    damaged: bool


@st.composite
def v2_cases(draw: st.DrawFn) -> V2Case:
    """A valid inference request (JSON, flat or nested, or binary; any accepted datatype; 1-4
    images; any outputs), then at most one damage: a wrong name, datatype, shape, value count,
    binary size, truncation, header length, outputs or id."""
    count = draw(st.integers(1, LIMITS.max_images))
    datatype = draw(st.sampled_from(list(V2_DTYPES)))
    dtype = np.dtype(V2_DTYPES[datatype])
    elements = st.integers(0, 255) if dtype.kind == "u" else st.floats(0.0, 1.0, width=16 if dtype.itemsize == 2 else 32)
    values = draw(hnp.arrays(dtype, (count, *INPUT_SHAPE), elements=elements))
    expected = values.astype(np.float32) / (np.float32(255.0) if dtype.kind == "u" else np.float32(1.0))
    damage = draw(st.sampled_from(V2_DAMAGE))
    spec: dict[str, Any] = {"name": "input" if damage == "name" else INPUT_NAME,
                            "datatype": draw(st.sampled_from(["INT8", "BYTES", 7, ["FP32"]])) if damage == "datatype" else datatype,
                            "shape": draw(st.sampled_from([[count, 28, 28], [count, 1, 28, 27], "x", [-1, *INPUT_SHAPE],
                                                           [count, 1, 28, True]])) if damage == "shape"
                            else [count, *INPUT_SHAPE]}
    binary = b""
    if draw(st.booleans()):
        raw = values.tobytes()
        size = len(raw) + draw(st.sampled_from([1, -1])) if damage == "size" else len(raw)
        spec["parameters"] = {"binary_data_size": size}
        binary = raw[: len(raw) // 2] if damage == "truncate" else raw + (b"\0" if damage == "extra-bytes" else b"")
    else:
        data = values.tolist() if draw(st.booleans()) else values.ravel().tolist()
        spec["data"] = values.ravel().tolist()[:-1] if damage == "count" else data
    request: dict[str, Any] = {"inputs": [spec]}
    if draw(st.booleans()) or damage == "outputs":
        request["outputs"] = (draw(st.sampled_from([[{"name": 1}], "x", [{"name": LOGITS}, {"name": LOGITS}]]))
                              if damage == "outputs" else
                              [{"name": name, "parameters": {"binary_data": draw(st.booleans())}}
                               for name in draw(st.lists(st.sampled_from(OUTPUT_NAMES), min_size=1, unique=True))])
    if draw(st.booleans()) or damage == "id":
        request["id"] = 5 if damage == "id" else draw(st.text(max_size=8))
    header = orjson.dumps(request)
    declared: str | None = str(len(header)) if binary or draw(st.booleans()) else None
    if damage == "header-length":
        declared = draw(st.sampled_from([str(len(header) + 3), str(len(header) - 1), "-1", "abc"]))
    binary_only, json_only = ("size", "truncate", "extra-bytes"), ("count",)
    applies = not ((damage in binary_only and not binary) or (damage in json_only and binary))
    return V2Case(header + binary, declared, expected, damaged=damage != "none" and applies)


def decode_v2(body: bytes, header_length: str | None) -> np.ndarray:
    request = decode_request(body, header_length, MAX_DEPTH + len(INPUT_SHAPE), model_io.input_check(LIMITS.max_images))
    model_io.requested_outputs(request, OUTPUT_NAMES)
    return model_io.request_batch(request)


def test_v2_decoding_gives_exactly_the_sent_batch_or_a_client_error() -> None:
    tally = Tally()

    @PROPERTY_SETTINGS
    @given(v2_cases())
    def check(case: V2Case) -> None:
        batch = tally.outcome(lambda: decode_v2(case.body, case.header_length))
        if batch is None:
            assert case.damaged, "a valid request was refused"
            return
        assert not case.damaged, "a damaged request was accepted"
        assert batch.dtype == np.float32 and batch.shape == case.expected.shape
        np.testing.assert_array_equal(batch, case.expected)

    check()
    tally.assert_accepts(at_least=0.2)


@PROPERTY_SETTINGS
@given(st.binary(max_size=300), st.sampled_from([None, "0", "10", "300", "x"]))
def test_v2_decoding_of_random_bytes_is_a_client_error(body: bytes, header_length: str | None) -> None:
    assert outcome(lambda: decode_v2(body, header_length)) is None


def test_v2_decoding_reads_binary_tensors_exactly() -> None:
    batch = np.random.default_rng(0).random((2, *INPUT_SHAPE), dtype=np.float32)
    raw = batch.astype("<f4").tobytes()
    header = orjson.dumps({"inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [2, *INPUT_SHAPE],
                                       "parameters": {"binary_data_size": len(raw)}}]})
    np.testing.assert_array_equal(decode_v2(header + raw, str(len(header))), batch)
    with pytest.raises(ServiceError, match="truncated") as truncated:
        decode_v2(header + raw[:-5], str(len(header)))
    assert truncated.value.status_code == 400
    assert HEADER_LENGTH == "Inference-Header-Content-Length"


# ---- images and preprocessing --------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY_SETTINGS
@given(st.binary(max_size=400) | st.binary(max_size=300).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail)
       | st.binary(max_size=300).map(lambda tail: b"GIF89a" + tail) | st.binary(max_size=300).map(lambda tail: b"BM" + tail))
def test_decode_image_on_random_bytes_gives_an_image_or_a_client_error(data: bytes) -> None:
    image = outcome(lambda: decode_image(data, LIMITS.max_pixels))
    if image is not None:
        assert image.size[0] * image.size[1] <= LIMITS.max_pixels


@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY_SETTINGS
@given(encoded_images(), st.booleans())
def test_image_to_input_on_real_and_damaged_files(data: bytes, preprocess: bool) -> None:
    image = outcome(lambda: image_to_input(data, LIMITS.max_pixels, preprocess))
    if image is not None:
        assert_valid_images(image[None])


@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY_SETTINGS
@given(encoded_images(), st.sampled_from(["", "data:image/png;base64,"]), st.sampled_from(["ok", "garbage", "not-a-string"]))
def test_decode_base64_image_gives_an_input_or_a_client_error(data: bytes, prefix: str, form: str) -> None:
    value: Any = prefix + base64.b64encode(data).decode()
    if form == "garbage":
        value = value[: len(value) // 2] + "!*" + value[len(value) // 2 :]
    elif form == "not-a-string":
        value = list(data[:4])
    image = outcome(lambda: decode_base64_image(value, LIMITS, True, "image_base64"))
    if image is not None:
        assert_valid_images(image[None])


@PROPERTY_SETTINGS
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 64), st.integers(1, 64)), elements=st.floats(0.0, 1.0, width=32)))
def test_mnist_style_always_gives_a_28x28_input_in_range(gray: np.ndarray) -> None:
    assert_valid_images(mnist_style(gray)[None])


@PROPERTY_SETTINGS
@given(st.integers(20, 120), st.integers(20, 120), st.data(), st.booleans())
def test_mnist_style_scales_and_centres_a_digit_like_the_mnist_set(height: int, width: int, data: st.DataObject,
                                                                     dark_on_light: bool) -> None:
    """A solid block anywhere, on either background, comes out white on black, its longer side
    20 pixels, its centre of mass in the middle of the 28x28 frame."""
    box_height, box_width = data.draw(st.integers(4, height - 2)), data.draw(st.integers(4, width - 2))
    top, left = data.draw(st.integers(1, height - box_height - 1)), data.draw(st.integers(1, width - box_width - 1))
    gray = np.zeros((height, width), np.float32)
    gray[top : top + box_height, left : left + box_width] = 1.0
    if dark_on_light:
        gray = 1.0 - gray
    result = mnist_style(gray)
    assert_valid_images(result[None])
    ink = result > 0.5
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) in (19, 20, 21)
    ys, xs = np.indices(result.shape)
    total = result.sum()
    assert abs((ys * result).sum() / total - 13.5) <= 1.0
    assert abs((xs * result).sum() / total - 13.5) <= 1.0
    assert result[0].max() < 0.5 and result[:, 0].max() < 0.5  # the background stays black


def test_constant_images_have_no_ink() -> None:
    for value in (0.0, 0.3, 1.0):
        assert not mnist_style(np.full((40, 30), value, np.float32)).any()


@pytest.mark.parametrize("side", [300, 5_000, 20_000])
def test_a_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    """Over max_image_pixels (here 256x256) -> 413 naming the limit, from the header alone: a
    20000x20000 1-bit PNG is about 50 KB and would decode to 400 million pixels."""
    bomb = decompression_bomb(side, side)
    assert len(bomb) < 100_000
    with pytest.raises(ServiceError, match="max_image_pixels") as refused:
        decode_image(bomb, LIMITS.max_pixels)
    assert refused.value.status_code == 413


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pillows_own_bomb_guard_is_an_error_not_a_warning() -> None:
    """Past Pillow's MAX_IMAGE_PIXELS the image is refused (413) before it is decoded, not
    merely warned about, even when the configured limit would allow it."""
    width = height = 10_000  # 100 M pixels: over Pillow's 89.5 M warning threshold
    with pytest.raises(ServiceError, match="decompression bomb") as refused:
        decode_image(decompression_bomb(width, height), max_pixels=width * height)
    assert refused.value.status_code == 413
