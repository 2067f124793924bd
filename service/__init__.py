"""mnist-serve: an inference microservice for handwritten-digit CNNs."""

__version__ = "0.1.0"
