"""Gradient attribution, unit inspection and the frameworks' comparison against the real models:
the numpy layers must recompute every output ONNX Runtime gives, the gradients must match finite
differences of the ONNX model itself, and a unit's contributions must sum to its value."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract.spec import LOGITS, MNIST_MEAN, MNIST_STD
from contract.validation import layer_weights, validate_model
from service import attribution, framework_diff, inspection, layer_math
from service.attribution import INPUT, Trace

from tests.conftest import MODELS_DIR, mnist_dir, model_file, served_models

FLOAT_MODELS = [name for name in served_models() if not name.endswith("-int8")]
ARCHITECTURES = sorted({name.split("-")[0] for name in FLOAT_MODELS})


@functools.cache
def loaded(name: str) -> tuple[ort.InferenceSession, Trace]:
    """The model in ONNX Runtime, and a trace factory's ingredients: (session, trace of a blank input)."""
    path = model_file(name)
    proto = onnx.load(str(path))
    validated = validate_model(proto)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    blank = Trace(validated.layers, np.zeros((28, 28), np.float32), {}, layer_weights(proto, validated.metadata),
                  validated.metadata.flatten_order)
    return session, blank


def trace_of(name: str, image: np.ndarray) -> Trace:
    session, blank = loaded(name)
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"image": image[None, None].astype(np.float32)})))
    return Trace.from_batch(blank.layers, image, outputs, blank.weights, blank.flatten_order)


def forward64(trace: Trace, image: np.ndarray, start: int = 0, values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The network recomputed in float64 from the served weights (an independent replica), from
    the input, or from layer `start` given what it receives (`values`)."""
    if values is None:
        values = ((image.astype(np.float64) - MNIST_MEAN) / MNIST_STD)[None]
    outputs = {}
    for spec in trace.layers[start:]:
        weight = trace.weights.get(spec.name, {})
        if spec.kind == "conv":
            values = layer_math.conv_forward(values, weight["weight"].astype(np.float64), weight["bias"].astype(np.float64),
                                             layer_math.conv_padding(spec))
        elif spec.kind == "relu":
            values = np.maximum(values, 0.0)
        elif spec.kind == "pool":
            values = layer_math.maxpool_forward(values, spec.kernel)
        elif spec.kind == "flatten":
            values = layer_math.flatten(values, trace.flatten_order)
        else:
            values = weight["weight"].astype(np.float64) @ values + weight["bias"]
        outputs[spec.name] = values
    return outputs


@pytest.fixture(scope="module")
def digits(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> list[tuple[np.ndarray, int]]:
    images, labels = mnist_test_set
    return [(images[index].astype(np.float32) / 255.0, int(labels[index])) for index in (0, 1, 2, 3)]


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_numpy_layers_recompute_every_output_of_onnx_runtime(name: str, digits: list[tuple[np.ndarray, int]]) -> None:
    image, _ = digits[0]
    trace = trace_of(name, image)
    replica = forward64(trace, image)
    for spec in trace.layers:
        served = trace.outputs[spec.name]
        assert np.max(np.abs(replica[spec.name] - served)) <= 1e-5 * max(1.0, float(np.max(np.abs(served)))), spec.name


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_saliency_matches_finite_differences_of_the_onnx_model(name: str, digits: list[tuple[np.ndarray, int]]) -> None:
    """Every pixel nudged up and down by 3e-3 (one ONNX Runtime batch of 1,569 images): the central
    differences of 'logit(label) - logit(runner-up)' against the computed gradient. The network is
    piecewise linear; a nudge crosses a few of its ~50,000 ReLU kinks, so the two agree closely but
    not to the last digit (the float64 test below is the exact one). A wrong flatten order, a
    transposed kernel or a wrong pooling route fails by far (the control at the end)."""
    session, _ = loaded(name)
    eps = 3e-3
    for image, label in digits[:1]:
        trace = trace_of(name, image)
        versus = int(np.argsort(trace.logits)[-2]) if int(np.argmax(trace.logits)) == label else int(np.argmax(trace.logits))
        computed = attribution.attribute(trace, "logit", label, versus).saliency
        batch = np.repeat(image[None], 2 * 784 + 1, axis=0)
        for pixel in range(784):
            batch[1 + pixel].flat[pixel] += eps
            batch[785 + pixel].flat[pixel] -= eps
        logits = session.run([LOGITS], {"image": batch[:, None]})[0].astype(np.float64)
        objective = logits[:, label] - logits[:, versus]
        estimate = ((objective[1:785] - objective[785:]) / (2 * eps)).reshape(28, 28)
        error = np.linalg.norm(estimate - computed) / np.linalg.norm(estimate)
        correlation = np.corrcoef(estimate.ravel(), computed.ravel())[0, 1]
        assert error < 0.15 and correlation > 0.99, (name, label, versus, error, correlation)

        wrong_order = "HWC" if trace.flatten_order == "CHW" else "CHW"
        control = attribution.attribute(Trace(trace.layers, trace.image, trace.outputs, trace.weights, wrong_order),
                                        "logit", label, versus).saliency
        assert np.linalg.norm(estimate - control) / np.linalg.norm(estimate) > 3 * error


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_gradients_are_exact_where_the_network_is_differentiable(name: str, digits: list[tuple[np.ndarray, int]]) -> None:
    """Faint noise removes the pooling ties of a uniform background; then the float64 replica's
    finite differences (steps of 1e-9: a ReLU's input can be within 1e-7 of its kink) match the
    gradient at the input, for both objectives, and HiResCAM's sum at the last conv layer."""
    rng = np.random.default_rng(0)
    image, trace = tie_free(name, digits[2][0], rng)
    replica_trace = Trace(trace.layers, image, {**forward64(trace, image), **_softmax(forward64(trace, image))},
                          trace.weights, trace.flatten_order)
    target, versus = 4, 9
    for objective in ("logit", "probability"):
        gradients = attribution.backward(replica_trace, trace.layers[-1].name,
                                         attribution.logit_gradient(replica_trace, objective, target, versus))

        def value(img: np.ndarray) -> float:
            outputs = forward64(trace, img)
            return attribution.objective_value(Trace(trace.layers, img, {**outputs, **_softmax(outputs)},
                                                     trace.weights, trace.flatten_order), objective, target, versus)

        for _ in range(3):
            direction = rng.standard_normal((28, 28))
            estimate = (value(image + 1e-9 * direction) - value(image - 1e-9 * direction)) / 2e-9
            assert float(np.sum(gradients[INPUT] * direction)) == pytest.approx(estimate, rel=1e-4, abs=1e-6)

    # HiResCAM, summed over its map, is the derivative of the score along the cam layer's own output
    cam = attribution.attribute(replica_trace, "logit", target, versus)
    position = trace.index(cam.gradcam_layer)
    activation = replica_trace.outputs[cam.gradcam_layer]

    def scaled(factor: float) -> float:
        outputs = {**replica_trace.outputs, **forward64(trace, image, position + 1, activation * factor)}
        return attribution.objective_value(Trace(trace.layers, image, {**outputs, **_softmax(outputs)}, trace.weights,
                                                 trace.flatten_order), "logit", target, versus)

    along = (scaled(1 + 1e-7) - scaled(1 - 1e-7)) / 2e-7
    assert float(cam.hirescam_native.sum()) == pytest.approx(along, rel=1e-4, abs=1e-6)


def tie_free(name: str, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Trace]:
    """`image` with faint noise, drawn until no pooling window with a positive maximum has its two
    largest values within twice the tie tolerance of each other (the gradient shares such near-ties
    by design; windows of zeros pass no gradient anyway) and no ReLU's input is within 1e-7 of 0
    (a 1e-9 step moves them by about 1e-8)."""
    for _ in range(20):
        noisy = image + rng.uniform(0, 0.02, image.shape).astype(np.float32)
        trace = trace_of(name, noisy)
        replica = forward64(trace, noisy)
        gaps, inputs = [], []
        for position, spec in enumerate(trace.layers):
            received = replica[trace.layers[position - 1].name] if position else None
            if spec.kind == "pool" and received is not None:
                ranked = np.sort(layer_math._windows(received, spec.kernel), axis=3)
                top, second = ranked[..., -1], ranked[..., -2]
                gaps.append(float(np.min(((top - second) / np.maximum(1.0, top))[top > 0])))
            if spec.kind == "relu" and received is not None:
                inputs.append(float(np.min(np.abs(received))))
        if min(gaps) > 2 * layer_math.TIE_TOLERANCE and min(inputs) > 1e-7:
            return noisy, trace
    raise AssertionError("no tie-free input found")


def _softmax(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    logits = outputs["fc2"]
    shifted = np.exp(logits - logits.max())
    return {LOGITS: logits, "probabilities": shifted / shifted.sum()}


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_gradcam_sits_on_the_last_conv_layer_and_on_the_input_grid(name: str, digits: list[tuple[np.ndarray, int]]) -> None:
    image, label = digits[0]
    trace = trace_of(name, image)
    result = attribution.attribute(trace, "logit", label)
    last_conv = [spec.name for spec in trace.layers if spec.kind == "conv"][-1]
    assert result.gradcam_layer == trace.layers[trace.index(last_conv) + 1].name
    assert result.gradcam_native.shape == trace.outputs[result.gradcam_layer].shape[1:]
    assert result.gradcam.shape == (28, 28)
    layer_gradient = attribution.backward(trace, trace.layers[-1].name, np.eye(10)[label])[result.gradcam_layer]
    np.testing.assert_allclose(result.channel_weights, layer_gradient.mean(axis=(1, 2)), rtol=1e-6)
    activation = trace.outputs[result.gradcam_layer]
    np.testing.assert_allclose(result.gradcam_native, np.tensordot(result.channel_weights, activation, axes=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.hirescam_native, (layer_gradient * activation).sum(axis=0), rtol=1e-5, atol=1e-6)
    # the resampled map holds the native values at the units' centres
    fields = layer_math.receptive_fields(trace.layers)[result.gradcam_layer]
    centre = fields.centre(3)
    if centre == int(centre):
        np.testing.assert_allclose(result.gradcam[int(centre), int(centre)], result.gradcam_native[3, 3], rtol=1e-5, atol=1e-6)
    assert np.allclose(result.gradient_x_input, result.saliency * image)


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_a_units_contributions_sum_to_its_value_and_its_field_bounds_its_gradient(
        name: str, digits: list[tuple[np.ndarray, int]]) -> None:
    image, _ = digits[1]
    trace = trace_of(name, image)
    for spec in trace.layers:
        for index in (0, spec.shape[0] - 1):
            unit = inspection.select(trace, spec.name, index)
            found = inspection.inspect(trace, unit)
            total = float(found.channel_contributions.sum()) + found.bias
            assert total == pytest.approx(found.pre_activation, rel=1e-4, abs=1e-4), (spec.name, index)
            assert found.pre_activation == pytest.approx(inspection.value(trace, found.producer), abs=0)
            if spec.kind != "flatten":
                assert found.value == pytest.approx(float(trace.outputs[spec.name][(index, unit.y, unit.x) if unit.spatial
                                                                                    else index]))
            top, left, bottom, right = found.field
            outside = np.ones((28, 28), bool)
            outside[top : bottom + 1, left : right + 1] = False
            assert np.all(found.input_gradient[outside] == 0), (spec.name, index, found.field)


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_a_flatten_element_is_the_pool_output_it_holds(name: str, digits: list[tuple[np.ndarray, int]]) -> None:
    trace = trace_of(name, digits[0][0])
    position = trace.index("flatten")
    pooled = trace.layers[position - 1]
    flat = trace.outputs["flatten"]
    for index in (0, 1, 7, 100, flat.shape[0] - 1):
        channel, y, x = inspection.flatten_position(trace.flatten_order, pooled.shape, index)
        assert flat[index] == trace.outputs[pooled.name][channel, y, x]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_frameworks_compared_after_the_layout_alignment(architecture: str, digits: list[tuple[np.ndarray, int]]) -> None:
    names = [f"{architecture}-pytorch", f"{architecture}-tensorflow"]
    if not set(names) <= set(FLOAT_MODELS):
        pytest.skip(f"both frameworks' {architecture} models are needed")
    image = digits[3][0]
    torch_trace, tf_trace = (trace_of(name, image) for name in names)
    itself = framework_diff.compare_layers(torch_trace, torch_trace)
    assert all(layer.agreement == pytest.approx(1.0) for layer in itself if layer.agreement is not None)
    assert all(pair.a == pair.b for layer in itself for pair in layer.pairs)

    compared = {layer.name: layer for layer in framework_diff.compare_layers(torch_trace, tf_trace)}
    pooled = torch_trace.layers[torch_trace.index("flatten") - 1].name
    assert compared["flatten"].agreement == pytest.approx(compared[pooled].agreement)  # the same maps once aligned
    assert compared["fc2"].differences == pytest.approx(list(torch_trace.logits - tf_trace.logits), abs=1e-5)
    assert compared["fc1"].agreement is None and compared["fc1"].pairs == []

    shuffled = np.random.default_rng(1).permutation(torch_trace.outputs["conv1"].shape[0])
    recovered = framework_diff.greedy_match(framework_diff.correlations(torch_trace.outputs["conv1"],
                                                                          torch_trace.outputs["conv1"][shuffled])[0])
    assert [shuffled[pair.b] for pair in recovered] == [pair.a for pair in recovered]

    difference = framework_diff.probability_difference(torch_trace, tf_trace)
    assert difference["total_variation"] == pytest.approx(
        float(np.abs(torch_trace.probabilities - tf_trace.probabilities).sum() / 2))


def test_an_int8_models_maps_are_an_approximation_close_to_its_sources(
        tmp_path: Path, digits: list[tuple[np.ndarray, int]]) -> None:
    """An int8 copy of lenet-pytorch (quantized here): the server says its maps are approximate, and
    they are the float network's gradient with the dequantized weights along the int8 model's path:
    close to the source model's exact map (measured r = 0.98 on ten digits)."""
    from service.api.insight import quantized
    from training.quantize import QuantizeSettings, run

    source = "lenet-pytorch"
    path = run(MODELS_DIR / source, tmp_path, mnist_dir(),
               QuantizeSettings(calibration_images=200, test_limit=1000, max_accuracy_drop=0.005))
    proto = onnx.load(str(path))
    validated = validate_model(proto)
    assert quantized(validated.metadata) and not quantized(validate_model(onnx.load(str(model_file(source)))).metadata)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    weights = layer_weights(proto, validated.metadata)
    for image, label in digits[:3]:
        outputs = dict(zip(names, session.run(None, {"image": image[None, None]})))
        int8 = Trace.from_batch(validated.layers, image, outputs, weights, validated.metadata.flatten_order)
        approximate = attribution.attribute(int8, "logit", label).saliency
        exact = attribution.attribute(trace_of(source, image), "logit", label).saliency
        assert np.corrcoef(approximate.ravel(), exact.ravel())[0, 1] > 0.9
