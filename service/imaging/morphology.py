"""The few image operations preprocessing needs, in numpy alone (serving does not install scipy).

Flat square min/max filters are separable and computed by doubling: log2(window) whole-array
passes per axis, so a window a third of the image costs a few times what a 3x3 one does. Connected
components are labelled by runs with union-find on small (<= 128 px) masks.
"""

from __future__ import annotations

import numpy as np


def _running_extreme_rows(values: np.ndarray, window: int, take_max: bool) -> np.ndarray:
    """Max (or min) over a centred window of `window` rows; outside the image is ignored.

    Doubling: after k steps each row holds the extreme of the next 2**k rows, and a window is two
    overlapping such spans: log2(window) whole-array operations on contiguous rows."""
    length, before = values.shape[0], window // 2
    fill = -np.inf if take_max else np.inf
    combine = np.maximum if take_max else np.minimum
    table = np.pad(values, [(before, window - 1 - before)] + [(0, 0)] * (values.ndim - 1), constant_values=fill)
    span = 1
    while span * 2 <= window:
        table = combine(table[:-span], table[span:])
        span *= 2
    return combine(table[:length], table[window - span : window - span + length])


def _running_extreme(values: np.ndarray, window: int, axis: int, take_max: bool) -> np.ndarray:
    """Max (or min) over a centred window of `window` pixels along `axis`; outside the image is ignored."""
    if window <= 1:
        return values
    if axis == 0:
        return _running_extreme_rows(values, window, take_max)
    return np.ascontiguousarray(_running_extreme_rows(np.ascontiguousarray(values.T), window, take_max).T)


def max_filter(values: np.ndarray, window: int) -> np.ndarray:
    return _running_extreme(_running_extreme(values, window, 0, True), window, 1, True)


def min_filter(values: np.ndarray, window: int) -> np.ndarray:
    return _running_extreme(_running_extreme(values, window, 0, False), window, 1, False)


def opening(values: np.ndarray, window: int) -> np.ndarray:
    """Removes bright structures narrower than `window`; keeps steps, ramps and wider plateaus.

    The image is extended by repeating its edge, so that the square may also stand partly outside:
    a ramp rising to the border is kept to its last pixel (with the square held inside, its top
    would be cut flat)."""
    window |= 1  # centred, so that the dilation undoes the erosion exactly
    margin = window // 2
    padded = np.pad(values, margin, mode="edge")
    opened = max_filter(min_filter(padded, window), window)
    return opened[margin : margin + values.shape[0], margin : margin + values.shape[1]]


def box_blur(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over a centred `window` x `window` square (edges: the mean of what is inside the image).

    Sums of shifted rows, then of shifted columns: `window` additions per axis (it is used at 3)."""
    if window <= 1:
        return values
    result = values.astype(np.float32)
    before, after = window // 2, window - 1 - window // 2
    for _ in range(2):  # rows, then (transposed) columns
        length = result.shape[0]
        padded = np.pad(result, [(before, after), (0, 0)])
        inside = np.pad(np.ones(length, np.float32), (before, after))
        total = padded[:length].copy()
        count = inside[:length].copy()
        for shift in range(1, window):
            total += padded[shift : shift + length]
            count += inside[shift : shift + length]
        result = np.ascontiguousarray((total / count[:, None]).T)
    return result


def max_pool(values: np.ndarray, factor: int) -> np.ndarray:
    """Max over `factor` x `factor` blocks (the last partial blocks included)."""
    if factor <= 1:
        return values
    height, width = values.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.pad(values, ((0, rows * factor - height), (0, cols * factor - width)), constant_values=values.min())
    return padded.reshape(rows, factor, cols, factor).max(axis=(1, 3))


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean [H, W] mask -> (int32 labels, 0 = background; count)."""
    height, width = mask.shape
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    starts_r, starts_c = np.nonzero(edges == 1)
    ends_c = np.nonzero(edges == -1)[1] - 1  # same row order as the starts: runs alternate start/end
    parent = list(range(len(starts_r)))

    def root(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    row_first = np.searchsorted(starts_r, np.arange(height + 1))
    for row in range(1, height):
        above, here = range(row_first[row - 1], row_first[row]), range(row_first[row], row_first[row + 1])
        i = above.start
        for run in here:
            # runs above that touch this one (8-connectivity: diagonal neighbours count)
            while i < above.stop and ends_c[i] < starts_c[run] - 1:
                i += 1
            j = i
            while j < above.stop and starts_c[j] <= ends_c[run] + 1:
                a, b = root(j), root(run)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                j += 1
    roots = np.array([root(run) for run in range(len(parent))], dtype=np.int64)
    unique_roots, run_labels = np.unique(roots, return_inverse=True)
    labels = np.zeros((height, width), np.int32)
    for run in range(len(parent)):
        labels[starts_r[run], starts_c[run] : ends_c[run] + 1] = run_labels[run] + 1
    return labels, len(unique_roots)


def min_pool(values: np.ndarray, factor: int) -> np.ndarray:
    """Min over `factor` x `factor` blocks (the last partial blocks included)."""
    return -max_pool(-values, factor)


def _dilate3(values: np.ndarray) -> np.ndarray:
    grown = values.copy()
    np.maximum(grown[1:], values[:-1], out=grown[1:])
    np.maximum(grown[:-1], values[1:], out=grown[:-1])
    rows = grown.copy()
    np.maximum(grown[:, 1:], rows[:, :-1], out=grown[:, 1:])
    np.maximum(grown[:, :-1], rows[:, 1:], out=grown[:, :-1])
    return grown


def reconstruct(marker: np.ndarray, mask: np.ndarray, check_every: int = 8) -> np.ndarray:
    """Morphological reconstruction by dilation: `marker` (<= `mask`) grown inside `mask` until stable.

    Restores every bright structure of `mask` that is connected, through pixels at least as bright,
    to where `marker` already has that level. 3x3 steps; as many as the longest such path is long."""
    current = np.minimum(marker, mask)
    for step in range(1, 4 * sum(mask.shape) + 1):
        grown = np.minimum(_dilate3(current), mask)
        if step % check_every == 0 and np.array_equal(grown, current):
            return grown
        current = grown
    return current
