# iGAT Lab: one image for the dashboard, the Celery GPU workers and the one-shot migration.
#
#   docker build -t igat-lab .                       # or: docker compose build
#   docker run --rm -p 127.0.0.1:8501:8501 igat-lab   # dashboard (the default command)
#   docker run --rm --gpus all igat-lab igat worker   # a worker (needs IGAT_BROKER_URL / IGAT_DATABASE_URL)
#
# CUDA comes with PyTorch itself: the Linux wheels on PyPI bundle the CUDA runtime and cuDNN
# (torch 2.14.1 from PyPI is built for CUDA 13.0, NVIDIA driver >= 580), so a slim Python base is
# enough and the image does not carry a second copy of CUDA from an nvidia/cuda base. The host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit. For an older driver build with a
# wheel for an older CUDA from the PyTorch index, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
# PYTHON_BASE: only for building where Docker Hub cannot be reached - an image with Python 3.11 at
# the same paths (/usr/local/bin/python, pip), e.g. deploy/standin/python.Containerfile. Leave it.
ARG PYTHON_BASE=python:3.11-slim-bookworm
FROM ${PYTHON_BASE}

# Versions pinned to what the test suite runs with; keep within pyproject's bounds
# (torch <= 2.14.1, torchvision <= 0.29.1) - tests/test_deploy.py checks that.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://pypi.org/simple

# NVIDIA_DRIVER_CAPABILITIES: the NVIDIA runtime mounts the driver's compute (CUDA) and utility
# (nvidia-smi) libraries; which GPUs a container sees is decided by the compose device
# reservations, not here. IGAT_HOME holds the state every container shares (run checkpoints,
# dataset cache: a volume); datasets are mounted read-only at IGAT_DATA_DIR (CIFAR pickles or
# <dataset>-jpeg trees). OMP_NUM_THREADS: small per-batch work gains nothing from dozens of
# CPU threads per worker process.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    IGAT_HOME=/data/igat \
    IGAT_CACHE_DIR=/data/igat/cache \
    IGAT_DATA_DIR=/data/datasets \
    OMP_NUM_THREADS=4

# A fixed uid/gid so files on a shared (NFS) checkpoint volume have the same owner on every host.
RUN groupadd --gid 1000 igat \
    && useradd --uid 1000 --gid igat --create-home --shell /usr/sbin/nologin igat \
    && mkdir -p /data/igat /data/datasets /var/lib/igat/gpu-locks \
    && chown -R igat:igat /data/igat /var/lib/igat

WORKDIR /app

# Layer 1 (largest, changes least): PyTorch with its bundled CUDA libraries.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# Layer 2: the other runtime dependencies, read from pyproject.toml alone, so editing the source
# does not invalidate this layer. torch is already satisfied and stays as installed.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Layer 3: the source (owned by root: the service user cannot modify the code it runs).
COPY .streamlit/ .streamlit/
COPY igat/ igat/
COPY tasks/ tasks/
COPY app/ app/
RUN pip install --no-cache-dir --no-deps -e .

# Numeric, so Kubernetes' runAsNonRoot and hosts without an 'igat' user can verify it is not root.
USER 1000:1000

EXPOSE 8501

# The default command is the dashboard; the worker service overrides this check in
# docker-compose.yml (it has no HTTP port). Python instead of curl: nothing extra to install.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]

# Inside the container the dashboard listens on all interfaces; docker-compose.yml publishes it
# on 127.0.0.1 only (it can launch jobs and has no authentication).
CMD ["streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--server.port=8501", \
     "--server.headless=true", "--server.fileWatcherType=none", "--browser.gatherUsageStats=false"]
