# rft: the API, a worker and the inference process in one container (`rft serve`).
#
# Build:   docker build -t rft .
# Run:     docker run -p 8000:8000 -v rft-data:/data rft
#          docker exec <container> rft keys create --project me
# GPU:     docker run --gpus all ... (needs the NVIDIA container toolkit on the host).
#          The default build installs PyPI's torch wheel, which bundles the CUDA runtime
#          and also runs on CPU. For a smaller CPU-only image pass the CPU build, e.g.
#          --build-arg TORCH_SPEC=torch==2.13.0 --build-arg TORCH_PIP_ARGS="--index-url <the PyTorch CPU wheel index>".
# Sandbox: python and code_exec graders run user code in Linux namespaces (unshare,
#          prlimit, setpriv from util-linux). Inside a container that needs
#          `--cap-add SYS_ADMIN` (or a seccomp profile allowing unshare); without it the
#          service refuses such graders with a clear error rather than run them unsandboxed.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with rft and its dependencies -------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch
ARG TORCH_PIP_ARGS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rft
ENV PATH=/opt/rft/bin:$PATH
RUN pip install --upgrade pip && pip install ${TORCH_PIP_ARGS} "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY graders ./graders
COPY jobs ./jobs
RUN pip install .

# ---- runtime: the venv, util-linux for the sandbox, a non-root user ---------------
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 rft \
    && mkdir -p /data && chown rft:rft /data
COPY --from=build /opt/rft /opt/rft
ENV PATH=/opt/rft/bin:$PATH \
    RFT_DATA_DIR=/data \
    RFT_HOST=0.0.0.0 \
    RFT_PORT=8000 \
    PYTHONUNBUFFERED=1
USER rft
WORKDIR /home/rft
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["rft"]
CMD ["serve"]
