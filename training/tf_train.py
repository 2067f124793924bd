"""TensorFlow/Keras training of the contract's architectures, export through tf2onnx and verification.

Keras computes in NHWC; the model takes the contract's NCHW input and transposes inside the
graph, and every conv/relu/pool output is transposed back to NCHW, so the ONNX file looks
exactly like the PyTorch one from outside (its flatten order is HWC, which the metadata says).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnx
import tensorflow as tf
import keras

from training import data
from training.common import (Splits, TrainSettings, augmented_epochs, finish_and_write, init_record, initial_weights,
                             load_splits, model_dir_name, now_iso, refuse_existing, to_input)
from contract.metadata import ModelMetadata
from contract.spec import (
    ARCHITECTURES,
    INPUT_NAME,
    INPUT_SHAPE,
    LOGITS,
    MNIST_MEAN,
    MNIST_STD,
    PROBABILITIES,
    output_names,
)
from training.export import finalize_model, verify_export

log = logging.getLogger(__name__)



def build_models(architecture: str) -> tuple[keras.Model, keras.Model]:
    """(training model returning logits, inference model returning every contract output but logits).

    Both share the same layers; dropout is active only when the training model is called with training=True.
    """
    image = keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME)
    x = keras.layers.Permute((2, 3, 1), name="to_nhwc")(image)
    x = keras.layers.Rescaling(1.0 / MNIST_STD, offset=-MNIST_MEAN / MNIST_STD, name="normalize")(x)
    layer_outputs: list[keras.KerasTensor] = []
    for spec in ARCHITECTURES[architecture]:
        if spec.kind == "conv":
            x = keras.layers.Conv2D(spec.channels, spec.kernel, padding=spec.padding, name=spec.name)(x)
        elif spec.kind == "relu":
            x = keras.layers.ReLU(name=spec.name)(x)
        elif spec.kind == "pool":
            x = keras.layers.MaxPooling2D(spec.kernel, name=spec.name)(x)
        elif spec.kind == "flatten":
            x = keras.layers.Flatten(name=spec.name)(x)
        elif spec.kind == "dense":
            x = keras.layers.Dense(spec.shape[0], name=spec.name)(x)
        exposed = keras.layers.Permute((3, 1, 2), name=f"{spec.name}_nchw")(x) if len(spec.shape) == 3 else x
        layer_outputs.append(exposed)
        if spec.dropout_after:
            x = keras.layers.Dropout(spec.dropout_after, name=f"{spec.name}_dropout")(x)
    logits = x
    probabilities = keras.layers.Softmax(name=PROBABILITIES)(logits)
    train_model = keras.Model(image, logits, name=f"{architecture}_train")
    # fc2 is the logits tensor: it is exposed once here and duplicated as `logits` by finalize_model
    inference_model = keras.Model(image, [probabilities, *layer_outputs], name=architecture)
    return train_model, inference_model


def _dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((to_input(images), labels.astype(np.int32)))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=False)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _learning_rate(settings: TrainSettings, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if settings.schedule != "onecycle":
        return settings.learning_rate
    total = settings.epochs * steps_per_epoch
    warmup = max(int(0.3 * total), 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=settings.learning_rate / 25, decay_steps=max(total - warmup, 1), alpha=1e-4,
        warmup_target=settings.learning_rate, warmup_steps=warmup,
    )


def train(settings: TrainSettings, splits: Splits, progress: bool = True,
          tensorboard_dir: str | None = None) -> tuple[keras.Model, keras.Model, list[dict[str, float]]]:
    keras.utils.set_random_seed(settings.seed)
    if settings.threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
    train_model, inference_model = build_models(settings.architecture)
    if (start := initial_weights(settings, "tensorflow")) is not None:
        load_canonical_weights(train_model, start)
    steps_per_epoch = -(-len(splits.train_labels) // settings.batch_size)
    learning_rate = _learning_rate(settings, steps_per_epoch)
    if settings.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    else:
        optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_loss, train_acc = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()
    val_loss, val_acc = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            logits = train_model(images, training=True)
            loss = loss_fn(labels, logits)
        gradients = tape.gradient(loss, train_model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, train_model.trainable_variables))
        train_loss.update_state(loss)
        train_acc.update_state(labels, logits)

    @tf.function
    def test_step(images: tf.Tensor, labels: tf.Tensor) -> None:
        logits = train_model(images, training=False)
        val_loss.update_state(loss_fn(labels, logits))
        val_acc.update_state(labels, logits)

    writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir else None
    rng = np.random.default_rng(settings.seed)
    val_data = _dataset(splits.val_images, splits.val_labels, 1000, shuffle_seed=None)
    history: list[dict[str, float]] = []
    best_weights, best_accuracy = train_model.get_weights(), -1.0
    for epoch, augmented in enumerate(augmented_epochs(splits.train_images, settings, rng), start=1):
        started = time.monotonic()
        for metric in (train_loss, train_acc, val_loss, val_acc):
            metric.reset_state()
        batches = _dataset(augmented, splits.train_labels, settings.batch_size, shuffle_seed=settings.seed + epoch)
        bar = None
        if progress:
            from tqdm import tqdm  # stderr, plain text: Keras's Progbar writes to stdout with ANSI codes

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", unit="batch", leave=False)
        for images, labels in batches:
            train_step(images, labels)
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{float(train_loss.result()):.4f}", acc=f"{float(train_acc.result()):.4f}")
        if bar is not None:
            bar.close()
        for images, labels in val_data:
            test_step(images, labels)
        record = {"epoch": epoch, "train_loss": float(train_loss.result()), "train_accuracy": float(train_acc.result()),
                  "val_loss": float(val_loss.result()), "val_accuracy": float(val_acc.result()),
                  "seconds": time.monotonic() - started}
        history.append(record)
        log.info("epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0fs", epoch, record["train_loss"],
                 record["train_accuracy"], record["val_loss"], record["val_accuracy"], record["seconds"])
        if writer is not None:
            with writer.as_default():
                for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                    tf.summary.scalar(key, record[key], step=epoch)
        if record["val_accuracy"] > best_accuracy:
            best_accuracy, best_weights = record["val_accuracy"], train_model.get_weights()
    train_model.set_weights(best_weights)
    return train_model, inference_model, history


def canonical_weights(model: keras.Model, architecture: str) -> dict[str, dict[str, np.ndarray]]:
    """Conv kernels HWIO -> OIHW and dense kernels [in, out] -> [out, in], as the contract reads them."""
    weights: dict[str, dict[str, np.ndarray]] = {}
    for spec in ARCHITECTURES[architecture]:
        if spec.kind in ("conv", "dense"):
            kernel, bias = model.get_layer(spec.name).get_weights()
            canonical = kernel.transpose(3, 2, 0, 1) if spec.kind == "conv" else kernel.T
            weights[spec.name] = {"weight": canonical, "bias": bias}
    return weights


def load_canonical_weights(model: keras.Model, weights: dict[str, dict[str, np.ndarray]]) -> None:
    """The inverse of canonical_weights: OIHW -> HWIO, [out, in] -> [in, out]."""
    for name, params in weights.items():
        weight = params["weight"]
        kernel = weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight.T
        model.get_layer(name).set_weights([kernel, params["bias"]])


def export(inference_model: keras.Model, metadata: ModelMetadata, sample_images: np.ndarray) -> onnx.ModelProto:
    """Convert with tf2onnx under the contract and verify it against Keras on `sample_images`."""
    import tf2onnx

    signature = [tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME)]
    exported, _ = tf2onnx.convert.from_keras(inference_model, input_signature=signature, opset=17)
    keras_names = [PROBABILITIES, *(spec.name for spec in ARCHITECTURES[metadata.architecture])]
    graph_outputs = {name: out.name for name, out in zip(keras_names, exported.graph.output)}
    graph_outputs[LOGITS] = graph_outputs[keras_names[-1]]
    finished = finalize_model(exported, graph_outputs, metadata, canonical_weights(inference_model, metadata.architecture))
    inputs = to_input(sample_images)
    reference = dict(zip(keras_names, (np.asarray(t) for t in inference_model(inputs, training=False))))
    reference[LOGITS] = reference[keras_names[-1]]
    verify_export(finished, inputs, {name: reference[name] for name in output_names(metadata.architecture)})
    return finished


def run(settings: TrainSettings, data_dir: str | Path | None, out_dir: Path, report_dir: Path | None,
        version: int | None = None, overwrite: bool = False, progress: bool = True, tensorboard_dir: str | None = None) -> Path:
    if not overwrite:  # before hours of training, not after
        refuse_existing(out_dir, model_dir_name(settings.architecture, "tensorflow"), version)
    splits = load_splits(settings, data_dir)
    log.info("tensorflow %s: %d train, %d validation, %d test images", settings.architecture,
             len(splits.train_labels), len(splits.val_labels), len(splits.test_labels))
    _, inference_model, history = train(settings, splits, progress, tensorboard_dir)
    metadata = ModelMetadata(
        framework="tensorflow", framework_version=tf.__version__, architecture=settings.architecture,
        flatten_order="HWC", test_accuracy=0.0, test_loss=0.0,
        training={**settings.public(), **init_record(settings), "history": history, "train_images": int(len(splits.train_labels)),
                  "validation_images": int(len(splits.val_labels)), "keras_version": keras.__version__},
        data_sha256=data.dataset_sha256(data_dir), created=now_iso(),
    )
    finished = export(inference_model, metadata, splits.test_images[:256])
    return finish_and_write(finished, metadata, splits, out_dir, report_dir, version, overwrite)
