"""A gray photo or scan -> an ink map: bright where the pen was, 0 on the paper, whatever the light.

1. Even or uneven light, from the border's spread against the image's contrast.
2. Evenly lit (clean scans, drawings, MNIST itself): as MNIST preprocessing always did, one
   background level, the border's median, and the ink on the side of the contrast farther from it.
3. Unevenly lit (shading, a shadow): the polarity is the side on which pixels depart farthest
   from the local paper (cell medians); the paper is estimated at every pixel by a morphological
   opening of the ink-bright image with a square a third of the longer side, which removes every
   structure narrower than that (strokes) and keeps ramps, vignettes and a shadow's edge exactly,
   with a reconstruction by dilation for the narrow ends of a shadow's wedges; the ink is the
   darkening relative to the local paper, (g - b) / (1 - b), which divides out the light falling
   on the sheet (reflectance x illumination), less the paper's own noise.
4. Components: the ink's 8-connected components, on a grid of at most 128 x 128 cells so the cost
   stays bounded; the digit is the component with the most ink (one lying along a side of the
   frame, like a band of shadow or a table's edge, counts a twentieth, and under uneven light such
   a band is cut off the digit that touches it), plus the components close to it with a few percent
   of its ink (two-stroke 4s and 5s, a 7's bar, broken thin strokes). Specks, dust and far marks
   are dropped.

docs/images.md gives the reasons for each number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.imaging.morphology import box_blur, label, max_filter, max_pool, min_pool, opening, reconstruct

EVEN_BORDER = 0.15  # border spread (10th-90th percentile) under this fraction of the contrast: evenly lit
BACKGROUND_WINDOW = 1 / 3  # opening square, as a fraction of the longer side
POLARITY_CELLS = 4  # cells along each side for the paper's level when unevenly lit
POLARITY_SHARE = 0.003  # quantile of the departures from the paper compared on each side
LIGHT_INK_EVIDENCE = 1.5  # under uneven light, light ink must depart this many times farther than dark
NOISE_MADS = 5  # ink below the paper's median + 5 MADs is the paper's noise
PAPER_SHARE, PAPER_QUANTILE = 0.1, 0.05  # the paper's spread: its 5th-95th percentile, if it is a tenth of the image
WIDEST_STROKE = 0.25  # of the longer side: a tightly cropped digit's strokes are up to a fifth...
PHOTO_SIDE = 100  # ...and wider ink is a shadow, in an image this big (smaller ones are crops or drawings)
PAPER_INK, PAPER_MARGIN = 0.75, 0.08  # the paper: a stroke's width (at most this share of the side) from pixels 3/4 of the way to the ink
EXTREME = 0.001  # quantile taken as the darkest / brightest level (noise-proof, yet below a thin digit's share)
PAPER_LEVEL = 0.05  # a pixel this close to the rebuilt shadow level is shadowed paper, not ink
RECONSTRUCTION_SIDE = 128  # the shadow's wedges are rebuilt on a grid of at most this many cells a side
COMPONENT_SIDE = 128  # components are found on a grid of at most this many cells a side
CORE = 0.35  # ink above this fraction of the peak is a component's core
ATTACHED = 0.3  # a component along this fraction of a side of the frame is a shadow's or a table's edge...
ATTACHED_WEIGHT = 0.05  # ...and counts a twentieth when choosing the digit
CUTS = 2  # times a band along the frame is cut off the chosen component before choosing again
NEAR, KEEP = 0.3, 0.03  # other components this close (fraction of the digit's size) with this share of its ink belong to it
NEAR_BIG, BIG = 0.6, 0.3  # so do big parts a little farther (a 7's bar, a 5's flag, cut off where a shadow's edge crosses)


def _sample(values: np.ndarray) -> np.ndarray:
    """Every other pixel of big images, for their quantiles (which it leaves where they were)."""
    return values[::2, ::2] if values.size > 16384 else values


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def _dark_ink_by_cells(gray: np.ndarray) -> bool:
    """True when the ink is darker than the paper around it, whatever the light.

    The paper's level is taken as the median of each of POLARITY_CELLS x POLARITY_CELLS cells (the
    ink is the minority of a cell), interpolated; the ink is the side on which pixels depart
    farthest from it. A shadow's edge departs on both sides; ink on one, and farther. Bold strokes
    can be most of a cell, so light ink must depart LIGHT_INK_EVIDENCE times farther than dark:
    unevenly lit images are photos, and on paper ink is dark."""
    cell_h = max(1, gray.shape[0] // POLARITY_CELLS)
    cell_w = max(1, gray.shape[1] // POLARITY_CELLS)
    rows, cols = gray.shape[0] // cell_h, gray.shape[1] // cell_w
    cells = gray[: rows * cell_h, : cols * cell_w].reshape(rows, cell_h, cols, cell_w)
    medians = np.median(cells.transpose(0, 2, 1, 3).reshape(rows, cols, -1), axis=2).astype(np.float32)
    paper = np.asarray(Image.fromarray(medians, "F").resize((gray.shape[1], gray.shape[0]), Image.Resampling.BILINEAR))
    below, above = np.quantile(_sample(gray - paper), [POLARITY_SHARE, 1.0 - POLARITY_SHARE])
    return float(above) < LIGHT_INK_EVIDENCE * -float(below)


def _background(g: np.ndarray, window: int) -> np.ndarray:
    """The paper's level at every pixel of an ink-bright image `g` (noise already smoothed).

    An opening keeps the light's steps and ramps but not the narrow end of a shadow's wedge (it is
    narrower than the window, like a stroke). The wedge is connected, at its own level, to the
    wedge's body, which the opening kept: a reconstruction by dilation (on a grid of at most 128
    cells a side, cheap) brings it back. The reconstruction also floods strokes that touch the
    shadow, so it is taken only where the pixel is at the level it rebuilt (paper, not ink)."""
    fine = opening(g, window)
    factor = max(1, math.ceil(max(g.shape) / RECONSTRUCTION_SIDE))
    coarse = min_pool(g, factor)  # the paper's level per cell
    rebuilt = reconstruct(opening(coarse, max(3, round(window / factor))), coarse)
    if factor > 1:
        rebuilt = np.asarray(Image.fromarray(rebuilt.astype(np.float32), "F").resize(
            (coarse.shape[1] * factor, coarse.shape[0] * factor), Image.Resampling.BILINEAR))[: g.shape[0], : g.shape[1]]
    at_paper_level = (g - rebuilt) <= PAPER_LEVEL
    return np.where(at_paper_level & (rebuilt > fine), np.minimum(rebuilt, g), fine)


def ink_map(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """float32 [H, W] in [0, 1], any polarity and light -> (float32 [H, W]: the ink, 0 on the
    background; whether the light was uneven, so the background was estimated at every pixel)."""
    gray = gray.astype(np.float32, copy=False)
    smooth = box_blur(gray, 3) if min(gray.shape) >= 9 else gray
    low, high = (float(v) for v in np.quantile(_sample(smooth), [EXTREME, 1.0 - EXTREME]))
    contrast = high - low
    if contrast <= 1e-6:
        return np.zeros_like(gray), False
    border = _border(gray)
    level = float(np.median(border))
    uneven = _unevenly_lit(gray, border, level, low, high)
    if not uneven:
        dark_on_light = (level - low) > (high - level)
        g = 1.0 - gray if dark_on_light else gray
        background: np.ndarray | float = 1.0 - level if dark_on_light else level
    else:
        dark_on_light = _dark_ink_by_cells(smooth)
        g = 1.0 - smooth if dark_on_light else smooth  # the same pixels as the background's: a sharp
        window = max(3, round(max(gray.shape) * BACKGROUND_WINDOW))  # shadow edge must cancel out
        background = _background(g, window)
    ink = np.clip((g - background) / np.maximum(1.0 - np.asarray(background, np.float32), 0.05), 0.0, 1.0)
    return (_above_paper_noise(ink) if uneven else ink), uneven


def _unevenly_lit(gray: np.ndarray, border: np.ndarray, level: float, low: float, high: float) -> bool:
    """Whether the paper's own level varies: the border's spread, then the paper's alone.

    A tightly cropped digit has strokes on its border, so the border alone spreads as much as a
    shadow does; its paper, though, is one level. The paper is what lies farther than 2 px from
    every pixel past the middle of the contrast (ink, under even light): shading and a shadow's
    soft edge leave a spread there, strokes and their blurred edges do not."""
    contrast = high - low
    if float(np.quantile(border, 0.9) - np.quantile(border, 0.1)) <= EVEN_BORDER * contrast:
        return False
    ink_side = low if (level - low) > (high - level) else high
    inky = np.abs(gray - level) > PAPER_INK * abs(ink_side - level)
    width = _stroke_width(inky)
    if max(gray.shape) >= PHOTO_SIDE and width > WIDEST_STROKE * max(gray.shape):  # too wide for strokes: a shadow
        return True
    margin = round(min(max(3.0, width), max(gray.shape) * PAPER_MARGIN))
    paper = gray[~(max_filter(inky.astype(np.float32), 2 * margin + 1) > 0)]
    if paper.size < PAPER_SHARE * gray.size:  # hardly any paper away from the ink: nothing shows uneven light
        return False
    spread = float(np.quantile(paper, 1.0 - PAPER_QUANTILE) - np.quantile(paper, PAPER_QUANTILE))
    return spread > EVEN_BORDER * contrast


def _stroke_width(mask: np.ndarray) -> float:
    """The mean width of the strokes in a mask: twice its area over its outline's length."""
    inside = mask[1:-1, 1:-1]
    edge = inside & ~(mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:])
    return 2.0 * float(mask.sum()) / max(1, int(edge.sum()))


def _above_paper_noise(ink: np.ndarray) -> np.ndarray:
    """Subtract the paper's own level: its median plus NOISE_MADS median absolute deviations.

    The paper is most of the image, so the median and MAD of the ink map are those of the paper's
    grain, JPEG blocks and what the local background estimate misses."""
    sample = _sample(ink)
    median = float(np.median(sample))
    floor = median + NOISE_MADS * float(np.median(np.abs(sample - median)))
    peak = float(ink.max())
    if floor <= 0.0 or floor >= 0.5 * peak:  # clean, or the ink is no minority: nothing to tell apart
        return ink
    return np.clip((ink - floor) * (peak / (peak - floor)), 0.0, 1.0)


@dataclass(frozen=True)
class Components:
    labels: np.ndarray  # int32 [h, w] on the coarse grid, 0 = none
    mass: np.ndarray  # float [count]: ink per component
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    attached: np.ndarray  # bool [count]: lies along a side of the frame

    @property
    def count(self) -> int:
        return len(self.mass)


def _components(coarse: np.ndarray, mask: np.ndarray) -> Components:
    labels, count = label(mask)
    flat = labels.ravel()
    mass = np.bincount(flat, weights=coarse.ravel(), minlength=count + 1)[1:]
    rows, cols = np.indices(labels.shape)
    index, on = flat - 1, flat > 0
    top, left = np.full(count, labels.shape[0]), np.full(count, labels.shape[1])
    bottom, right = np.full(count, -1), np.full(count, -1)
    np.minimum.at(top, index[on], rows.ravel()[on])
    np.maximum.at(bottom, index[on], rows.ravel()[on])
    np.minimum.at(left, index[on], cols.ravel()[on])
    np.maximum.at(right, index[on], cols.ravel()[on])
    attached = np.zeros(count, bool)
    for side in _sides(labels):
        contact = np.bincount(side, minlength=count + 1)[1:]
        attached |= contact >= ATTACHED * len(side)
    return Components(labels, mass, top, bottom, left, right, attached)


def _sides(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return grid[0], grid[-1], grid[:, 0], grid[:, -1]


def _cut_frame_band(mask: np.ndarray, part: np.ndarray) -> np.ndarray:
    """`mask` without the cells along each side where `part` lies along it, to 1.5x its typical depth.

    A shadow's band or corner is as deep all along the side; a digit that merged into it reaches
    deeper in one place. The median depth is the band's, and the digit is what lies beyond."""
    cut = mask.copy()
    views = (cut, cut[::-1], cut.T, cut.T[::-1])  # each seen with its side as row 0
    parts = (part, part[::-1], part.T, part.T[::-1])
    for view, along in zip(views, parts):
        contact = along[0]
        if contact.sum() < ATTACHED * len(contact):
            continue
        depth = np.where(along.all(axis=0), along.shape[0], np.argmin(along, axis=0))[contact]
        view[: int(np.ceil(1.5 * np.median(depth))) + 1, :] = False
    return cut


def select_digit(ink: np.ndarray, cut_frame_bands: bool = False) -> np.ndarray:
    """The ink of the digit alone: its main component and the components that belong to it.

    With `cut_frame_bands` (unevenly lit images), a main component lying along a side of the frame
    loses what lies along it (a band of shadow the digit touches), and the choice is made again."""
    peak = float(ink.max())
    if peak <= 0.0:
        return ink
    factor = max(1, math.ceil(max(ink.shape) / COMPONENT_SIDE))
    coarse = max_pool(ink, factor)
    mask = coarse > CORE * peak
    found = _components(coarse, mask)
    for _ in range(CUTS if cut_frame_bands else 0):
        main = _main(found)
        if found.count == 0 or not found.attached[main]:
            break
        mask = _cut_frame_band(mask, found.labels == main + 1)
        found = _components(coarse, mask)
    if found.count == 0:
        return np.zeros_like(ink)
    keep = _belonging(found, _main(found))
    # Off: the components left out with their soft edges; with uneven light also whatever faint
    # ink lies away from the digit (what the local background left), beyond its soft edges.
    dropped = np.concatenate([[False], ~keep])[found.labels]
    off = max_filter(dropped.astype(np.float32), 3) > 0
    if cut_frame_bands:
        chosen = np.concatenate([[False], keep])[found.labels]
        off |= ~(max_filter(chosen.astype(np.float32), 5) > 0)
    if not off.any():
        return ink
    full = np.repeat(np.repeat(off, factor, axis=0), factor, axis=1)[: ink.shape[0], : ink.shape[1]]
    return np.where(full, 0.0, ink).astype(np.float32)


def _main(found: Components) -> int:
    return int(np.argmax(found.mass * np.where(found.attached, ATTACHED_WEIGHT, 1.0))) if found.count else 0


def _belonging(found: Components, main: int) -> np.ndarray:
    size = max(found.bottom[main] - found.top[main] + 1, found.right[main] - found.left[main] + 1)
    gap_rows = np.maximum(0, np.maximum(found.top - found.bottom[main], found.top[main] - found.bottom) - 1)
    gap_cols = np.maximum(0, np.maximum(found.left - found.right[main], found.left[main] - found.right) - 1)
    gap = np.maximum(gap_rows, gap_cols)
    share = found.mass / found.mass[main]
    belongs = ((gap <= NEAR * size) & (share >= KEEP)) | ((gap <= NEAR_BIG * size) & (share >= BIG))
    return (belongs & ~found.attached) | (np.arange(found.count) == main)
