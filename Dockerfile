# mnist-serve images, all built FROM one Debian base with Debian's own Python 3.11 and packages:
#   cpu    serving with ONNX Runtime on the CPU (onnxruntime)
#   gpu    serving with ONNX Runtime on CUDA 13 + cuDNN 9, both from the package index
#          (onnxruntime-gpu[cuda,cudnn]); the host needs only the NVIDIA driver and Container Toolkit
#   train  trains with PyTorch and/or TensorFlow on the CPU and exports ONNX into /models
#   lb     HAProxy from Debian, the load balancer of the compose `scale` profile
# Serving images hold contract/ and service/ only; train adds training/. Each Python image copies a
# ready virtual environment (bytecode compiled, pip removed) from its builder: no compiler, no pip,
# no build files; every image runs as a non-root user.
#
#   docker build --target cpu -t mnist-serve:cpu .          (or: docker compose build)
#
# BASE_IMAGE: pin it by digest with --build-arg BASE_IMAGE=debian:bookworm-slim@sha256:...; where
# Docker Hub cannot be reached, deploy/offline-bases makes debian:bookworm-slim from Debian's archive.
# Behind a proxy that re-signs HTTPS, give pip its CA bundle as a build secret (never in an image):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt ...
# (compose: BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt docker compose build).
# RUN --mount needs BuildKit: Docker 23+, or DOCKER_BUILDKIT=1, or docker compose.

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- common layers
FROM ${BASE_IMAGE} AS python
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

FROM python AS builder
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, in their own layer: a source edit does not reinstall them. The project itself
# is built with the venv's setuptools, offline, once the sources are copied.
COPY pyproject.toml deploy/pyproject_requirements.py deploy/constraints.txt deploy/pip-install ./
RUN --mount=type=secret,id=ca_bundle \
    ./pip-install -c constraints.txt setuptools wheel

# Serving settings shared by the cpu and gpu images.
FROM python AS serving
ENV MNIST_SERVE_HOST=0.0.0.0 \
    MNIST_SERVE_PORT=8000 \
    MNIST_SERVE_MODELS_DIR=/models
COPY --chown=10001:10001 models/ /models/
WORKDIR /home/app
# HTTP, and the Open Inference Protocol over gRPC (grpc_port)
EXPOSE 8000 8001
CMD ["mnist-serve", "serve"]

# ---------------------------------------------------------------- CPU serving
FROM builder AS cpu-builder
RUN --mount=type=secret,id=ca_bundle \
    python3 pyproject_requirements.py pyproject.toml cpu > requirements.txt \
    && ./pip-install -r requirements.txt -c constraints.txt
COPY contract/ contract/
COPY service/ service/
RUN ./pip-install --no-deps --no-build-isolation . \
    && python -m pip uninstall -y -q pip setuptools wheel \
    && cd / && python -c "import onnxruntime, service.main; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"

FROM serving AS cpu
ENV MNIST_SERVE_DEVICE=cpu
COPY --from=cpu-builder /opt/venv /opt/venv
USER 10001:10001

# ---------------------------------------------------------------- GPU serving
FROM builder AS gpu-builder
RUN --mount=type=secret,id=ca_bundle \
    python3 pyproject_requirements.py pyproject.toml gpu > requirements.txt \
    && echo 'onnxruntime-gpu[cuda,cudnn]' >> requirements.txt \
    && ./pip-install -r requirements.txt -c constraints.txt
COPY contract/ contract/
COPY service/ service/
RUN ./pip-install --no-deps --no-build-isolation . \
    && python -m pip uninstall -y -q pip setuptools wheel \
    && cd / && python -c "import onnxruntime as ort, service.main; providers = ort.get_available_providers(); print('onnxruntime', ort.__version__, providers); assert 'CUDAExecutionProvider' in providers"

FROM serving AS gpu
ENV MNIST_SERVE_DEVICE=cuda
COPY --from=gpu-builder /opt/venv /opt/venv
COPY deploy/check-cuda-libs /usr/local/bin/check-cuda-libs
# CUDA and cuDNN come from the nvidia-* wheels: the dynamic loader finds them through ld.so.conf
# (the NVIDIA Container Toolkit's ldconfig keeps the entry). Then no build step needs a GPU: every
# library the CUDA execution provider needs must resolve, except the driver's libcuda.so.1.
RUN find /opt/venv/lib/python3*/site-packages/nvidia -mindepth 2 -maxdepth 2 -type d -name lib \
        > /etc/ld.so.conf.d/mnist-serve-nvidia-wheels.conf \
    && ldconfig \
    && check-cuda-libs
USER 10001:10001

# ---------------------------------------------------------------- training
# CPU training: the trainers have no device option. TRAIN_EXTRAS picks the frameworks
# (torch, tensorflow or both); torch comes from PyTorch's CPU index, as PyPI's Linux wheel pulls
# several GB of CUDA libraries. tensorflow-cpu has no arm64 wheels: use TRAIN_EXTRAS=torch there.
FROM builder AS train-builder
ARG TRAIN_EXTRAS=torch,tensorflow
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=ca_bundle \
    python3 pyproject_requirements.py pyproject.toml "cpu,${TRAIN_EXTRAS}" > requirements.txt \
    && if grep -q '^torch' requirements.txt; then \
         ./pip-install --no-deps --index-url "${TORCH_INDEX_URL}" "$(grep '^torch==' constraints.txt)"; \
       fi \
    && ./pip-install -r requirements.txt -c constraints.txt
COPY contract/ contract/
COPY service/ service/
COPY training/ training/
RUN ./pip-install --no-deps --no-build-isolation . \
    && python -m pip uninstall -y -q pip wheel \
    && mnist-serve train --help > /dev/null

FROM python AS train
ENV MNIST_DIR=/data/mnist \
    MPLCONFIGDIR=/tmp/matplotlib
RUN mkdir -p /data/mnist /reports \
    && chown 10001:10001 /data/mnist /reports
COPY --from=train-builder /opt/venv /opt/venv
COPY --chown=10001:10001 models/ /models/
USER 10001:10001
WORKDIR /home/app
CMD ["mnist-serve", "train", "--framework", "pytorch", "--arch", "cnn", "--out", "/models", "--report-dir", "/reports", "--no-progress"]

# ---------------------------------------------------------------- load balancer
FROM ${BASE_IMAGE} AS lb
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/haproxy.cfg /etc/haproxy/haproxy.cfg
RUN haproxy -c -q -f /etc/haproxy/haproxy.cfg
USER haproxy
EXPOSE 8080 8001
# SIGUSR1: soft stop, the connections in progress are finished (hard-stop-after bounds it).
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
