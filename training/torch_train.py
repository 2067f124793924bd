"""PyTorch training of the contract's architectures, export to ONNX and verification."""

from __future__ import annotations

import copy
import io
import logging
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from training import data
from training.common import (Splits, TrainSettings, augmented_epochs, finish_and_write, init_record, initial_weights,
                             load_splits, model_dir_name, now_iso, refuse_existing, to_input)
from contract.metadata import ModelMetadata
from contract.spec import (
    ARCHITECTURES,
    INPUT_SHAPE,
    LOGITS,
    MNIST_MEAN,
    MNIST_STD,
    NUM_CLASSES,
    PROBABILITIES,
    output_names,
)
from training.export import finalize_model, verify_export

log = logging.getLogger(__name__)


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ContractNet(nn.Module):
    """A network built from the contract's layer list, one named module per layer.

    `forward` returns the logits; `forward_all` returns every contract output in order.
    """

    def __init__(self, architecture: str) -> None:
        super().__init__()
        self.architecture = architecture
        self.specs = ARCHITECTURES[architecture]
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.layers = nn.ModuleDict()
        self.dropouts = nn.ModuleDict()
        channels, features = INPUT_SHAPE[0], 0
        for spec in self.specs:
            if spec.kind == "conv":
                self.layers[spec.name] = nn.Conv2d(channels, spec.channels, spec.kernel, padding=spec.padding)
                channels = spec.channels
            elif spec.kind == "relu":
                self.layers[spec.name] = nn.ReLU()
            elif spec.kind == "pool":
                self.layers[spec.name] = nn.MaxPool2d(spec.kernel)
            elif spec.kind == "flatten":
                self.layers[spec.name] = nn.Flatten()
                features = spec.shape[0]
            elif spec.kind == "dense":
                self.layers[spec.name] = nn.Linear(features, spec.shape[0])
                features = spec.shape[0]
            if spec.dropout_after:
                self.dropouts[spec.name] = nn.Dropout(spec.dropout_after)

    def _run(self, x: torch.Tensor, keep: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.normalize(x)
        kept: list[torch.Tensor] = []
        for spec in self.specs:
            x = self.layers[spec.name](x)
            if keep:
                kept.append(x)
            if spec.name in self.dropouts:
                x = self.dropouts[spec.name](x)
        return x, kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, keep=False)[0]

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, kept = self._run(x, keep=True)
        return (logits, torch.softmax(logits, dim=1), *kept)

    def canonical_weights(self) -> dict[str, dict[str, np.ndarray]]:
        return {
            spec.name: {
                "weight": self.layers[spec.name].weight.detach().cpu().numpy(),
                "bias": self.layers[spec.name].bias.detach().cpu().numpy(),
            }
            for spec in self.specs
            if spec.kind in ("conv", "dense")
        }


    @torch.no_grad()
    def load_canonical_weights(self, weights: dict[str, dict[str, np.ndarray]]) -> None:
        for name, params in weights.items():
            self.layers[name].weight.copy_(torch.from_numpy(np.array(params["weight"])))
            self.layers[name].bias.copy_(torch.from_numpy(np.array(params["bias"])))


class _AllOutputs(nn.Module):
    def __init__(self, net: ContractNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.forward_all(x)


def _loader(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    dataset = TensorDataset(torch.from_numpy(to_input(images)), torch.from_numpy(labels.astype(np.int64)))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None, epoch: int, progress: bool) -> tuple[float, float]:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total_loss, correct, seen = 0.0, 0, 0
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False)
    for images, labels in batches:
        optimizer.zero_grad()
        logits = model(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if progress:
            batches.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / seen, correct / seen


@torch.no_grad()
def test_epoch(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        logits = model(images)
        total_loss += float(loss_fn(logits, labels))
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return total_loss / seen, correct / seen


def train(settings: TrainSettings, splits: Splits, progress: bool = True) -> tuple[ContractNet, list[dict[str, float]]]:
    """Train, keeping the weights of the epoch with the best validation accuracy."""
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = ContractNet(settings.architecture)
    if (start := initial_weights(settings, "pytorch")) is not None:
        model.load_canonical_weights(start)
    rng = np.random.default_rng(settings.seed)
    val_loader = _loader(splits.val_images, splits.val_labels, 1000, shuffle=False, seed=settings.seed)
    steps_per_epoch = -(-len(splits.train_labels) // settings.batch_size)
    if settings.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    elif settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {settings.optimizer!r}")
    scheduler = None
    if settings.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.learning_rate, epochs=settings.epochs, steps_per_epoch=steps_per_epoch
        )

    history: list[dict[str, float]] = []
    best_state, best_accuracy = copy.deepcopy(model.state_dict()), -1.0
    for epoch, train_images in enumerate(augmented_epochs(splits.train_images, settings, rng), start=1):
        started = time.monotonic()
        loader = _loader(train_images, splits.train_labels, settings.batch_size, shuffle=True, seed=settings.seed + epoch)
        train_loss, train_acc = train_epoch(model, loader, optimizer, scheduler, epoch, progress)
        val_loss, val_acc = test_epoch(model, val_loader)
        record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                  "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.monotonic() - started}
        history.append(record)
        log.info("epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0fs",
                 epoch, train_loss, train_acc, val_loss, val_acc, record["seconds"])
        if val_acc > best_accuracy:
            best_accuracy, best_state = val_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return model, history


def export(model: ContractNet, metadata: ModelMetadata, sample_images: np.ndarray) -> onnx.ModelProto:
    """Export to ONNX under the contract and verify it against PyTorch on `sample_images`."""
    wrapper = _AllOutputs(model).eval()
    names = output_names(model.architecture)
    example = torch.from_numpy(to_input(sample_images[:2]))
    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper, (example,), buffer, input_names=["image"], output_names=names,
        dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in names}},
        opset_version=17, do_constant_folding=True, dynamo=False,
    )
    exported = onnx.load_from_string(buffer.getvalue())
    graph_outputs = {name: out.name for name, out in zip(names, exported.graph.output)}
    finished = finalize_model(exported, graph_outputs, metadata, model.canonical_weights())
    wrapper.eval()  # the exporter restores the module's mode, which train() propagates to children
    with torch.no_grad():
        reference = wrapper(torch.from_numpy(to_input(sample_images)))
    verify_export(finished, to_input(sample_images), {name: t.numpy() for name, t in zip(names, reference)})
    return finished


def run(settings: TrainSettings, data_dir: str | Path | None, out_dir: Path, report_dir: Path | None,
        version: int | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    if not overwrite:  # before hours of training, not after
        refuse_existing(out_dir, model_dir_name(settings.architecture, "pytorch"), version)
    splits = load_splits(settings, data_dir)
    log.info("pytorch %s: %d train, %d validation, %d test images", settings.architecture,
             len(splits.train_labels), len(splits.val_labels), len(splits.test_labels))
    model, history = train(settings, splits, progress)
    metadata = ModelMetadata(
        framework="pytorch", framework_version=torch.__version__, architecture=settings.architecture,
        flatten_order="CHW", test_accuracy=0.0, test_loss=0.0,
        training={**settings.public(), **init_record(settings), "history": history, "train_images": int(len(splits.train_labels)),
                  "validation_images": int(len(splits.val_labels)), "dropout": "after pools and the hidden dense layer (cnn)"},
        data_sha256=data.dataset_sha256(data_dir), created=now_iso(),
    )
    finished = export(model, metadata, splits.test_images[:256])
    return finish_and_write(finished, metadata, splits, out_dir, report_dir, version, overwrite)


__all__ = ["ContractNet", "train", "export", "run", "LOGITS", "PROBABILITIES", "NUM_CLASSES"]
