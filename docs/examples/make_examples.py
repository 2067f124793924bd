"""Writes the README tour's example requests from the MNIST test set (run once; the files are committed):

    python docs/examples/make_examples.py /path/to/mnist

seven.json       V1 body: the first test image (a 7) as 0-255 integers
seven-v2.json    V2 (Open Inference Protocol) body: the same pixels as a UINT8 [1, 1, 28, 28] tensor
photo-four.jpg   a phone photo of test image 4 (a 4): ink on lit paper, stored rotated with EXIF Orientation
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.data import load_split
from training.perturb_photos import generate

HERE = Path(__file__).resolve().parent
SEVEN, FOUR = 0, 4  # indices in the MNIST test set
PHOTO_SEED = 3


def main(mnist_dir: str) -> None:
    test = load_split("test", mnist_dir)
    assert test.labels[SEVEN] == 7 and test.labels[FOUR] == 4
    seven = test.images[SEVEN].tolist()
    (HERE / "seven.json").write_text(json.dumps({"image": seven}, separators=(",", ":")) + "\n")
    v2 = {"id": "seven", "inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 28, 28], "data": [[seven]]}],
          "outputs": [{"name": "probabilities"}]}
    (HERE / "seven-v2.json").write_text(json.dumps(v2, separators=(",", ":")) + "\n")
    (HERE / "photo-four.jpg").write_bytes(generate("exif", test.images[FOUR : FOUR + 1], seed=PHOTO_SEED)[0])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/mnist")
