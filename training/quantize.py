"""`mnist-serve quantize`: an INT8 copy of a contract model, served as `<source>-int8`.

ONNX Runtime static quantization (`quantize_static`, QDQ format) calibrated on MNIST training
images. Two rewrites of the float graph come first, both exact:

- every `Relu` becomes `LeakyRelu(alpha=0)`. Quantized as a Relu, ONNX Runtime's quantizer gives
  the Relu's input the Relu's range (from 0) when the Relu is its only consuming node (graph outputs
  do not count), so `conv1`...`conv4` and `fc1` would be served clipped at 0; left in float, every
  Relu costs a dequantize-requantize round trip. A LeakyRelu keeps its own range, and ONNX Runtime
  runs it on the 8-bit values through a 256-entry table (QLinearLeakyRelu);
- a `MatMul` whose output only goes to an `Add` of a bias (tf2onnx's dense layer) becomes one
  `Gemm`, so its bias is quantized to int32 like PyTorch's instead of being a uint8 operand.

The input normalisation, Softmax (probabilities keep their resolution and sum to 1) and any layer
named in `float_layers` stay float. Every other contract output is the float output of a DequantizeLinear.
docs/int8.md has the measurements behind each choice.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from contract import store
from contract.metadata import QUANTIZED_SUFFIX, ModelMetadata
from contract.spec import CONTRACT_VERSION, INPUT_NAME, ContractError
from contract.validation import validate_model

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
QUANTIZED_OPS = ["Conv", "Gemm", "LeakyRelu", "MaxPool", "Flatten", "Reshape", "Transpose"]
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
PERCENTILE = 99.999  # the share of calibration values a Percentile range keeps (half the rest cut on each side)
MAX_LAYER_ERROR = 0.1  # root mean square of int8 - fp32 over that of fp32, per output, on COMPARED_IMAGES
COMPARED_IMAGES = 256


@dataclass
class QuantizeSettings:
    calibration_images: int = 1000
    seed: int = 0
    per_channel: bool = True
    activations: str = "uint8"  # or int8
    calibration_method: str = "Percentile"  # the range between percentiles 0.0005 and 99.9995: docs/int8.md
    float_layers: tuple[str, ...] = ()  # contract layers computed in float32 (e.g. conv1): see docs/int8.md
    max_accuracy_drop: float = 0.001  # refuse an int8 model that loses more test accuracy than this
    test_limit: int = 0  # evaluate on the first N test images only; 0 = all 10,000


class ImageBatches:
    """ONNX Runtime's CalibrationDataReader over uint8 MNIST images [n, 28, 28]."""

    def __init__(self, images: np.ndarray, batch_size: int = 100) -> None:
        from training.common import to_input

        self.batches = [to_input(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT_NAME: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def calibration_sample(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` training images drawn without replacement, in file order."""
    if not 0 < count <= len(images):
        raise ValueError(f"calibration needs 1 to {len(images)} images, not {count}")
    return images[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))]


def relu_as_leaky_relu(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "LeakyRelu"
            node.attribute.append(helper.make_attribute("alpha", 0.0))


def matmul_add_as_gemm(model: onnx.ModelProto) -> None:
    """MatMul(x, W) followed only by Add(., b), W and b initializers, b a vector -> Gemm(x, W, b)."""
    graph = model.graph
    vectors = {init.name for init in graph.initializer if len(init.dims) == 1}
    matrices = {init.name for init in graph.initializer if len(init.dims) == 2}
    graph_outputs = {output.name for output in graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for matmul in [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in matrices]:
        after = consumers.get(matmul.output[0], [])
        if len(after) != 1 or after[0].op_type != "Add" or matmul.output[0] in graph_outputs:
            continue
        add = after[0]
        bias = [name for name in add.input if name != matmul.output[0]]
        if len(bias) != 1 or bias[0] not in vectors:
            continue
        gemm = helper.make_node("Gemm", [matmul.input[0], matmul.input[1], bias[0]], [add.output[0]],
                                name=add.name or matmul.name)
        position = list(graph.node).index(add)
        graph.node.remove(add)
        graph.node.insert(position, gemm)
        graph.node.remove(matmul)


def layer_nodes(model: onnx.ModelProto, layers: tuple[str, ...]) -> list[str]:
    """The node computing each named contract layer: the producer of its output, looking through
    layout-only nodes (tf2onnx's NCHW <-> NHWC Transposes, an Identity)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    names = []
    for layer in layers:
        node = producers.get(layer)
        while node is not None and node.op_type in ("Transpose", "Identity"):
            node = producers.get(node.input[0])
        if node is None or not node.name:
            raise ContractError(f"no named node computes layer {layer!r}")
        names.append(node.name)
    return names


class PreprocessingAdvice(logging.Filter):
    """Drops quantize_static's advice to run its pre-processing first: that step (symbolic shape
    inference, which needs sympy) yields the same quantized graph for these models, measured."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def quantize_graph(model: onnx.ModelProto, calibration: np.ndarray, settings: QuantizeSettings) -> onnx.ModelProto:
    """The rewrites above, then `quantize_static` calibrated on `calibration` (uint8 images)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    relu_as_leaky_relu(prepared)
    matmul_add_as_gemm(prepared)
    options = dict(
        quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OPS, per_channel=settings.per_channel,
        activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[settings.activations],
        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, settings.calibration_method),
        nodes_to_exclude=layer_nodes(prepared, settings.float_layers), extra_options={"CalibPercentile": PERCENTILE},
    )
    advice = PreprocessingAdvice()
    with tempfile.TemporaryDirectory(prefix="mnist-quantize-") as tmp:
        float_path, quantized_path = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(prepared, float_path)
        logging.getLogger().addFilter(advice)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the histogram calibrators print their progress
                quantize_static(str(float_path), str(quantized_path), ImageBatches(calibration), **options)
        finally:
            logging.getLogger().removeFilter(advice)
        return onnx.load(quantized_path)


def shapes_from_integers(model: onnx.ModelProto) -> None:
    """A Shape that reads a DequantizeLinear's float output reads its integer input instead (same
    shape; tf2onnx's flatten asks for one), and nodes whose outputs nobody reads are dropped."""
    graph = model.graph
    dequantized = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in dequantized:
            node.input[0] = dequantized[node.input[0]]
    wanted = {output.name for output in graph.output}
    while True:
        read = wanted | {name for node in graph.node for name in node.input}
        dead = [node for node in graph.node if not any(name in read for name in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for named in [*graph.initializer, *graph.value_info, *graph.output]:
        named.name = renames.get(named.name, named.name)


def name_quantized_weights(model: onnx.ModelProto,
                           source_weights: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each layer's integer weight and bias take the source's names (`conv1.weight`, `conv1.bias`)
    and their scales and zero points `<name>_scale`, `<name>_zero_point`; the float tensors the
    DequantizeLinear nodes make of them become `<name>_dequantized`. Returns the metadata's weights."""
    from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

    dequantizers = {node.input[0]: node for node in model.graph.node if node.op_type == "DequantizeLinear"}
    renames: dict[str, str] = {}
    entries: dict[str, dict[str, str]] = {}
    for layer, source in source_weights.items():
        if source["weight"] + TENSOR_NAME_QUANT_SUFFIX not in dequantizers:  # a float layer keeps its weights
            entries[layer] = dict(source)
            continue
        entry = {"layout": source["layout"]}
        for role in ("weight", "bias"):
            name = source[role]
            node = dequantizers.get(name + TENSOR_NAME_QUANT_SUFFIX)
            if node is None:
                raise ContractError(f"the quantizer left {layer}'s {role} {name!r} unquantized")
            renames.update({node.output[0]: f"{name}_dequantized", node.input[0]: name,
                            node.input[1]: f"{name}_scale", node.input[2]: f"{name}_zero_point"})
            entry.update({role: name, f"{role}_scale": f"{name}_scale", f"{role}_zero_point": f"{name}_zero_point"})
        entries[layer] = entry
    # two passes: the dequantized outputs give up the names the integers take next
    _rename(model.graph, {old: new for old, new in renames.items() if new.endswith("_dequantized")})
    _rename(model.graph, {old: new for old, new in renames.items() if not new.endswith("_dequantized")})
    return entries


def layer_errors(source: onnx.ModelProto, quantized: onnx.ModelProto, images: np.ndarray) -> dict[str, float]:
    """Per output, on the same images: the root mean square of int8 - fp32 over that of fp32. Rounding
    gives about 0.01-0.03; a value range cut in half (a conv output clipped at 0) gives 0.5 or more."""
    import onnxruntime as ort

    from training.common import to_input

    batch = to_input(images)
    results = []
    for model in (source, quantized):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        results.append(dict(zip(names, session.run(names, {INPUT_NAME: batch}))))
    reference, served = results
    def rms(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))

    return {name: round(rms(served[name] - value) / max(rms(value), 1e-12), 4) for name, value in reference.items()}


def quantize_model(source_path: Path, data_dir: str | Path | None, settings: QuantizeSettings) -> onnx.ModelProto:
    """A quantized, contract-valid copy of the model at `source_path`, its metadata measured."""
    from training import data, report
    from training.common import now_iso, onnx_predict

    name, version, path = store.locate(source_path)
    raw = path.read_bytes()
    source = onnx.load_from_string(raw)
    source_meta = validate_model(source).metadata
    if source_meta.quantized:
        raise ContractError(f"{path} is already quantized")
    data_sha256 = data.dataset_sha256(data_dir)
    if data_sha256 != source_meta.data_sha256:
        raise ContractError(f"the MNIST files in {data.resolve_data_dir(data_dir)} are not the ones {name} "
                            "was trained on")
    train, test = data.load_split("train", data_dir), data.load_split("test", data_dir)
    test_count = settings.test_limit or len(test)
    test_images, test_labels = test.images[:test_count], test.labels[:test_count]

    calibration = calibration_sample(train.images, settings.calibration_images, settings.seed)
    model = quantize_graph(source, calibration, settings)
    shapes_from_integers(model)
    weights = name_quantized_weights(model, source_meta.weights)
    errors = layer_errors(source, model, test_images[:COMPARED_IMAGES])
    worst = max(errors, key=errors.__getitem__)
    if errors[worst] > MAX_LAYER_ERROR:
        raise ContractError(f"int8 output {worst!r} is off the float model's by {errors[worst]:.3f} of its root mean "
                            f"square (at most {MAX_LAYER_ERROR})")

    float_eval = report.evaluate(onnx_predict(source, test_images)[1], test_labels)
    int8_eval = report.evaluate(onnx_predict(model, test_images)[1], test_labels)
    if float_eval.accuracy - int8_eval.accuracy > settings.max_accuracy_drop:
        raise ContractError(f"int8 test accuracy {int8_eval.accuracy:.4f} is more than {settings.max_accuracy_drop} "
                            f"below the float model's {float_eval.accuracy:.4f}")

    import onnxruntime

    metadata = ModelMetadata(
        framework=source_meta.framework, framework_version=source_meta.framework_version,
        architecture=source_meta.architecture, flatten_order=source_meta.flatten_order,
        test_accuracy=int8_eval.accuracy, test_loss=int8_eval.loss, per_class_accuracy=int8_eval.per_class_accuracy,
        training={**source_meta.training, "test_images": test_count}, data_sha256=source_meta.data_sha256,
        created=now_iso(), weights=weights,
        quantization={
            "method": "onnxruntime static quantization (quantize_static)",
            "onnxruntime_version": onnxruntime.__version__,
            "format": "QDQ",
            "weights": f"int8, symmetric, {'per channel' if settings.per_channel else 'per tensor'}",
            "activations": f"{settings.activations}, asymmetric, per tensor",
            "float_layers": list(settings.float_layers),
            "calibration": {"method": settings.calibration_method, "images": settings.calibration_images,
                            "split": "MNIST training images", "seed": settings.seed,
                            **({"percentile": PERCENTILE} if settings.calibration_method == "Percentile" else {})},
            "source": {"name": name, "version": version, "sha256": hashlib.sha256(raw).hexdigest(),
                       "test_accuracy": float_eval.accuracy, "test_loss": float_eval.loss},
            "layer_error": errors,
            "rewrites": ["Relu as LeakyRelu(alpha=0)", "MatMul + bias Add as Gemm"],
        },
    )
    del model.metadata_props[:]
    helper.set_model_props(model, metadata.to_props())
    model.doc_string = (f"mnist-serve {metadata.architecture} ({metadata.framework}), int8 from {name} "
                        f"v{version}, contract v{CONTRACT_VERSION}")
    onnx.checker.check_model(model)
    validate_model(model)
    return model


def run(source_path: Path, out_dir: Path, data_dir: str | Path | None, settings: QuantizeSettings,
        version: int | None = None) -> Path:
    """Quantize and write `out_dir/<source>-int8/<version>/model.onnx` (version: next free)."""
    model = quantize_model(source_path, data_dir, settings)
    metadata = validate_model(model).metadata
    name = metadata.quantization["source"]["name"] + QUANTIZED_SUFFIX
    version = version or store.next_version(out_dir, name)
    path = store.write_atomic(store.model_path(out_dir, name, version), model.SerializeToString())
    log.info("%s v%d: test accuracy %.4f (float %.4f) -> %s", name, version, metadata.test_accuracy,
             metadata.quantization["source"]["test_accuracy"], path)
    return path


def add_quantize(sub: argparse._SubParsersAction) -> None:
    defaults = QuantizeSettings()
    parser = sub.add_parser(
        "quantize", help="an int8 copy of a model (ONNX Runtime static quantization), served as <name>-int8",
        description="Quantize a contract model to int8 (ONNX Runtime static quantization, QDQ, calibrated on MNIST "
                    "training images), check it against the float model, measure it on the test set and write "
                    "<out>/<name>-int8/<version>/model.onnx. docs/int8.md explains the choices.")
    parser.add_argument("--source", action="append", type=Path,
                        help="model directory (its highest version) or model.onnx; repeatable "
                             "(default: models/cnn-pytorch and models/cnn-tensorflow)")
    parser.add_argument("--version", type=int, help="the source's version (default: its highest)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models",
                        help="models directory to write into (default: the repository's models/)")
    parser.add_argument("--out-version", type=int, help="the int8 model's version (default: next free)")
    parser.add_argument("--calibration-images", type=int, default=defaults.calibration_images,
                        help=f"MNIST training images to calibrate on (default: {defaults.calibration_images})")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default=defaults.calibration_method,
                        help=f"how each tensor's range is chosen (default: {defaults.calibration_method})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"which training images calibrate (default: {defaults.seed})")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    parser.add_argument("--activations", choices=["uint8", "int8"], default=defaults.activations,
                        help=f"activation type (default: {defaults.activations})")
    parser.add_argument("--float-layers", default=",".join(defaults.float_layers),
                        help="comma-separated contract layers left in float32, e.g. conv1 (default: none)")
    parser.add_argument("--max-accuracy-drop", type=float, default=defaults.max_accuracy_drop,
                        help="refuse a model losing more test accuracy than this, a fraction "
                             f"(default: {defaults.max_accuracy_drop}, 0.1 point)")
    parser.add_argument("--test-limit", type=int, default=0, help="evaluate on N test images only (quick runs)")
    parser.add_argument("--data-dir", help="MNIST IDX files (else MNIST_DIR, else data/mnist)")
    parser.add_argument("--speed-rounds", type=int, default=0,
                        help="then time float and int8 in this process, alternating, this many rounds (0: skip)")
    parser.add_argument("--profile", action="store_true",
                        help="then profile float and int8 per operator type at batch 256 (ONNX Runtime's profiler)")
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads for --speed-rounds and --profile (default: 2, as the service)")
    parser.set_defaults(handler=quantize)


def quantize(args: argparse.Namespace) -> int:
    settings = QuantizeSettings(
        calibration_images=args.calibration_images, seed=args.seed, per_channel=not args.per_tensor,
        activations=args.activations, calibration_method=args.calibration_method,
        float_layers=tuple(layer for layer in args.float_layers.split(",") if layer),
        max_accuracy_drop=args.max_accuracy_drop, test_limit=args.test_limit,
    )
    sources = args.source or [REPO_ROOT / "models" / "cnn-pytorch", REPO_ROOT / "models" / "cnn-tensorflow"]
    summary: list[dict[str, Any]] = []
    for source in sources:
        if args.version is not None:
            source = source / str(args.version) / store.MODEL_FILE
        try:
            path = run(source, args.out, args.data_dir, settings, args.out_version)
        except (ContractError, OSError, ValueError) as exc:  # a bad source, data or setting: one line, exit 2
            print(f"mnist-serve quantize: {source}: {exc}", file=sys.stderr)
            return 2
        metadata = validate_model(onnx.load(path)).metadata
        summary.append({"path": str(path), "test_accuracy": metadata.test_accuracy, **{
            key: metadata.quantization[key] for key in ("source", "calibration", "weights", "activations")}})
        if args.speed_rounds or args.profile:
            from training.quantize_speed import speed_report

            summary[-1].update(speed_report(store.locate(source)[2], path, args.data_dir, args.speed_rounds,
                                            args.profile, args.threads))
    print(json.dumps(summary, indent=2))
    return 0
