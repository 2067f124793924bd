# mnist-serve images. One Dockerfile, three final targets:
#   gpu    ONNX Runtime with CUDA 13 + cuDNN 9 (onnxruntime-gpu), on NVIDIA's CUDA runtime image
#   cpu    ONNX Runtime for the CPU (onnxruntime), on a slim Python image
#   train  trains with PyTorch and/or TensorFlow (CPU) and exports ONNX into /models
# Each final stage copies a ready virtual environment (bytecode compiled, pip removed) from its
# builder: no compiler, no pip, no build files; it runs as a non-root user (uid 10001).
# Base images are pinned by exact tag; pin them by digest too with
# --build-arg PYTHON_IMAGE=...@sha256:... and CUDA_IMAGE=...@sha256:... (docs/deployment.md).
#
#   docker build --target gpu -t mnist-serve:gpu .
#   docker build --target cpu -t mnist-serve:cpu .
#   docker build --target train -t mnist-serve:train .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU serving
FROM ${PYTHON_IMAGE} AS cpu-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, in their own layer: a source edit does not reinstall them.
COPY pyproject.toml deploy/pyproject_requirements.py deploy/constraints.txt ./
RUN python pyproject_requirements.py pyproject.toml cpu > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt -c constraints.txt
COPY contract/ contract/
COPY service/ service/
COPY training/ training/
COPY bench/ bench/
RUN /opt/venv/bin/pip install --no-deps . \
    && cd / && /opt/venv/bin/python -c "import onnxruntime, service.main; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && /opt/venv/bin/python -m pip uninstall -y -q pip

FROM ${PYTHON_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNIST_SERVE_HOST=0.0.0.0 \
    MNIST_SERVE_PORT=8000 \
    MNIST_SERVE_MODELS_DIR=/models \
    MNIST_SERVE_DEVICE=cpu
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app
COPY --from=cpu-builder /opt/venv /opt/venv
COPY --chown=10001:10001 models/ /models/
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
CMD ["mnist-serve", "serve"]

# ---------------------------------------------------------------- GPU serving
# Ubuntu 24.04's own Python 3.12 in both stages, so the venv's interpreter path is the same.
FROM ${CUDA_IMAGE} AS gpu-builder
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3.12 -m venv /opt/venv
COPY pyproject.toml deploy/pyproject_requirements.py deploy/constraints.txt ./
RUN python3.12 pyproject_requirements.py pyproject.toml gpu > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt -c constraints.txt
COPY contract/ contract/
COPY service/ service/
COPY training/ training/
COPY bench/ bench/
# No GPU while building: only check that the CUDA provider is compiled in.
RUN /opt/venv/bin/pip install --no-deps . \
    && cd / && /opt/venv/bin/python -c "import onnxruntime as ort, service.main; providers = ort.get_available_providers(); print('onnxruntime', ort.__version__, providers); assert 'CUDAExecutionProvider' in providers" \
    && /opt/venv/bin/python -m pip uninstall -y -q pip

FROM ${CUDA_IMAGE} AS gpu
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNIST_SERVE_HOST=0.0.0.0 \
    MNIST_SERVE_PORT=8000 \
    MNIST_SERVE_MODELS_DIR=/models \
    MNIST_SERVE_DEVICE=cuda
COPY --from=gpu-builder /opt/venv /opt/venv
COPY --chown=10001:10001 models/ /models/
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
CMD ["mnist-serve", "serve"]

# ---------------------------------------------------------------- training
# CPU training: the trainers have no device option. TRAIN_EXTRAS picks the frameworks
# (torch, tensorflow or both); torch comes from PyTorch's CPU index, as PyPI's Linux wheel pulls
# several GB of CUDA libraries. tensorflow-cpu has no arm64 wheels: use TRAIN_EXTRAS=torch there.
FROM ${PYTHON_IMAGE} AS train-builder
ARG TRAIN_EXTRAS=torch,tensorflow
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml deploy/pyproject_requirements.py deploy/constraints.txt ./
RUN python pyproject_requirements.py pyproject.toml "cpu,${TRAIN_EXTRAS}" > requirements.txt \
    && if grep -q '^torch' requirements.txt; then \
         /opt/venv/bin/pip install --no-deps --index-url "${TORCH_INDEX_URL}" "$(grep '^torch==' constraints.txt)"; \
       fi \
    && /opt/venv/bin/pip install -r requirements.txt -c constraints.txt
COPY contract/ contract/
COPY service/ service/
COPY training/ training/
COPY bench/ bench/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/mnist-serve train --help > /dev/null \
    && /opt/venv/bin/python -m pip uninstall -y -q pip

FROM ${PYTHON_IMAGE} AS train
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNIST_DIR=/data/mnist \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/mnist /reports \
    && chown -R 10001:10001 /data /reports
COPY --from=train-builder /opt/venv /opt/venv
COPY --chown=10001:10001 models/ /models/
USER 10001:10001
WORKDIR /home/app
CMD ["mnist-serve", "train", "--framework", "pytorch", "--arch", "cnn", "--out", "/models", "--report-dir", "/reports", "--no-progress"]
