"""Users' image files -> the model's 28x28 input: decoding (decode, gray), cleaning up photos
(photo, morphology) and MNIST-style framing (mnist_style). docs/images.md walks through each step."""
