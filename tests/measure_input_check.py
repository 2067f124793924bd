"""How often each input-check warning (service/input_check.py) fires on digits and on things that
are not digits, all drawn as the page's pad draws them (280x280, 22 px white strokes on black) and
preprocessed by the server's own code. The thresholds in service/input_check.py come from this
table; docs/page.md quotes it.

    python -m tests.measure_input_check [--per-kind 300] [--mnist 1000] [--model cnn-pytorch]

Digits: MNIST test images scaled up to the pad's size, and scikit-learn's 8x8 digits (UCI
optdigits, other writers, scanned coarsely) when scikit-learn is installed. Non-digits (seeded):
scribbles, filled blobs and polygons, letters that do not look like digits (DejaVu fonts), outline
shapes, hatching, scattered dots, strokes wider than the pad.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

from contract.spec import PROBABILITIES
from service import input_check
from tests.conftest import mnist_dir, model_file

SIDE, WIDTH = 280, 22
FONTS = Path("/usr/share/fonts/truetype/dejavu")
LETTERS = "ACEFHKMNPRTUVWXYadefhkmnprtuvwxy"  # no O, I, l, S, Z, B, g, q: they pass for digits
CODES = ("blank", "touches_every_border", "solid", "pieces", "unsure")
Generator = Callable[[np.random.Generator], Image.Image]


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (SIDE, SIDE), 0)
    return image, ImageDraw.Draw(image)


def scribble(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    draw.line([tuple(point) for point in rng.uniform(20, 260, (rng.integers(6, 16), 2))], fill=255, width=WIDTH, joint="curve")
    return image


def blob(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    (cx, cy), (rx, ry) = rng.uniform(100, 180, 2), rng.uniform(40, 120, 2)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return image


def polygon(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    draw.polygon([tuple(point) for point in rng.uniform(20, 260, (rng.integers(3, 8), 2))], fill=255)
    return image


def letter(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    fonts = sorted(FONTS.glob("DejaVu*.ttf"))
    font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), 200)
    draw.text((140, 140), LETTERS[rng.integers(len(LETTERS))], fill=255, font=font, anchor="mm")
    return image


def shape(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    kind, centre, radius = int(rng.integers(5)), 140.0, float(rng.uniform(60, 120))
    if kind == 0:
        draw.rectangle([centre - radius, centre - radius, centre + radius, centre + radius], outline=255, width=WIDTH)
    elif kind == 1:
        draw.polygon([(centre, centre - radius), (centre - radius, centre + radius), (centre + radius, centre + radius)],
                     outline=255, width=WIDTH)
    elif kind in (2, 3):
        arms = [((-1, -1), (1, 1)), ((-1, 1), (1, -1))] if kind == 2 else [((-1, 0), (1, 0)), ((0, -1), (0, 1))]
        for (x0, y0), (x1, y1) in arms:
            draw.line([(centre + x0 * radius, centre + y0 * radius), (centre + x1 * radius, centre + y1 * radius)],
                      fill=255, width=WIDTH)
    else:
        star = [(centre + radius * math.cos(a) * (1 if i % 2 == 0 else 0.4), centre + radius * math.sin(a) * (1 if i % 2 == 0 else 0.4))
                for i, a in enumerate(np.linspace(0, 2 * math.pi, 11))]
        draw.line(star, fill=255, width=WIDTH)
    return image


def hatching(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    for y in np.linspace(40, 240, rng.integers(3, 8)):
        draw.line([(30, y), (250, y + rng.uniform(-30, 30))], fill=255, width=WIDTH)
    return image


def dots(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    for _ in range(rng.integers(5, 30)):
        x, y = rng.uniform(10, 270, 2)
        draw.ellipse([x - 11, y - 11, x + 11, y + 11], fill=255)
    return image


def wide_strokes(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas()
    draw.line([tuple(point) for point in rng.uniform(0, 280, (20, 2))], fill=255, width=WIDTH * 3)
    return image


NON_DIGITS: dict[str, Generator] = {"scribble": scribble, "filled blob": blob, "filled polygon": polygon, "letter": letter,
                                    "outline shape": shape, "hatching": hatching, "scattered dots": dots,
                                    "wide strokes": wide_strokes}


def mnist_digits(count: int, rng: np.random.Generator) -> list[Image.Image]:
    from training.data import load_split

    images = load_split("test", mnist_dir()).images
    return [Image.fromarray(images[index]).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            for index in rng.choice(len(images), count, replace=False)]


def other_digits() -> list[Image.Image]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return []
    return [Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            for image in load_digits().images]


def rates(images: list[Image.Image], session: ort.InferenceSession) -> dict[str, float]:
    framings = [input_check.frame(np.asarray(image, np.float32) / 255.0) for image in images]
    batch = np.stack([framing.input for framing in framings])[:, None].astype(np.float32)
    probabilities = session.run([PROBABILITIES], {"image": batch})[0]
    fired = [{warning.code for warning in input_check.warnings(input_check.measure(framing, row))}
             for framing, row in zip(framings, probabilities)]
    result = {code: sum(code in codes for codes in fired) / len(fired) for code in CODES}
    result["any"] = sum(bool(codes) for codes in fired) / len(fired)
    result["count"] = len(fired)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=300, help="non-digits generated per kind")
    parser.add_argument("--mnist", type=int, default=1000, help="MNIST test digits")
    parser.add_argument("--model", default="cnn-pytorch", help="the model whose confidence is measured")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    session = ort.InferenceSession(str(model_file(args.model)), providers=["CPUExecutionProvider"])
    sets = {"MNIST test digits": mnist_digits(args.mnist, rng)}
    others = other_digits()
    if others:
        sets["scikit-learn digits (8x8 scans)"] = others
    sets.update({name: [make(rng) for _ in range(args.per_kind)] for name, make in NON_DIGITS.items()})
    table = {name: rates(images, session) for name, images in sets.items()}
    print(f"| input ({args.model}) | n | " + " | ".join(CODES) + " | any warning |")
    print("|---|---|" + "---|" * (len(CODES) + 1))
    for name, row in table.items():
        print(f"| {name} | {row['count']} | " + " | ".join(f"{row[code]:.1%}" for code in CODES) + f" | {row['any']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
