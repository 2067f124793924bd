"""Occlusion sensitivity (Zeiler & Fergus): how much the target class's probability drops when a
patch of the input is blanked out, at every patch position, computed as one batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import Unprocessable
from service.preprocess import SIZE


@dataclass(frozen=True)
class OcclusionPlan:
    patch: int
    stride: int
    fill: float

    @property
    def positions(self) -> list[int]:
        return list(range(0, SIZE - self.patch + 1, self.stride))


def make_plan(patch: int, stride: int, fill: float) -> OcclusionPlan:
    if not 1 <= patch <= SIZE:
        raise Unprocessable(f"patch must be between 1 and {SIZE}, got {patch}")
    if not 1 <= stride <= SIZE:
        raise Unprocessable(f"stride must be between 1 and {SIZE}, got {stride}")
    if not 0.0 <= fill <= 1.0:
        raise Unprocessable(f"fill must be in [0, 1], got {fill}")
    return OcclusionPlan(patch, stride, fill)


def occluded_batch(image: np.ndarray, plan: OcclusionPlan) -> np.ndarray:
    """[28, 28] -> [1 + P*P, 28, 28]: the image itself first, then one copy per patch position."""
    positions = plan.positions
    batch = np.repeat(image[None], 1 + len(positions) ** 2, axis=0)
    index = 1
    for top in positions:
        for left in positions:
            batch[index, top : top + plan.patch, left : left + plan.patch] = plan.fill
            index += 1
    return batch


def sensitivity(probabilities: np.ndarray, target: int, plan: OcclusionPlan) -> tuple[np.ndarray, np.ndarray]:
    """(map [P, P] of probability drops, heatmap [28, 28]: mean drop over the patches covering each pixel)."""
    positions = plan.positions
    side = len(positions)
    drops = (probabilities[0, target] - probabilities[1:, target]).reshape(side, side)
    total = np.zeros((SIZE, SIZE), np.float64)
    count = np.zeros((SIZE, SIZE), np.float64)
    for row, top in enumerate(positions):
        for col, left in enumerate(positions):
            total[top : top + plan.patch, left : left + plan.patch] += drops[row, col]
            count[top : top + plan.patch, left : left + plan.patch] += 1
    heatmap = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return drops.astype(np.float32), heatmap.astype(np.float32)
