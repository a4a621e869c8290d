# rft: the API, a worker and the inference process in one container (`rft serve`).
#
# Build:   docker build -t rft .
# Run:     docker run --cap-drop ALL --cap-add SYS_ADMIN --cap-add SYS_CHROOT --cap-add SETUID \
#              --cap-add SETGID --cap-add KILL --security-opt apparmor=unconfined \
#              --security-opt no-new-privileges --memory 16g -p 8000:8000 -v rft-data:/data rft
#          docker exec <container> rft keys create --project me
#          docker exec <container> rft sandbox-check   # can python/code_exec graders run?
# GPU:     docker run --gpus all ... (needs the NVIDIA container toolkit on the host).
#          The default build installs PyPI's torch wheel, which bundles the CUDA runtime
#          and also runs on CPU. For a smaller CPU-only image pass the CPU build, e.g.
#          --build-arg TORCH_SPEC=torch==2.13.0 --build-arg TORCH_PIP_ARGS="--index-url <the PyTorch CPU wheel index>".
# Sandbox: python and code_exec graders run user code in Linux namespaces (unshare,
#          prlimit, setpriv from util-linux; graders/sandbox). Building one takes root
#          with the five capabilities above (graders.sandbox.CONTAINER_CAPS), nothing
#          more: SYS_ADMIN for the namespaces and mounts (Docker's default seccomp
#          profile then allows unshare), SYS_CHROOT, SETUID/SETGID to switch each sample
#          to its sandbox's own uid, KILL to end the samples. AppArmor's docker-default
#          profile forbids mount, hence apparmor=unconfined. So the service runs as root
#          in the container and the user code as uids 61000+ with no capabilities.
#          Docker mounts the cgroup tree read-only, so each sandbox's memory is capped
#          per process only; --memory caps the container as a whole. Without these
#          options the service starts anyway, refuses such graders with a clear error,
#          and says why in /healthz ("sandbox") and `rft sandbox-check`.

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

# ---- runtime: the venv and util-linux for the sandbox -------------------------------
# No USER line: the sandbox needs root (see above); user code never runs as root.
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
COPY --from=build /opt/rft /opt/rft
ENV PATH=/opt/rft/bin:$PATH \
    RFT_DATA_DIR=/data \
    RFT_HOST=0.0.0.0 \
    RFT_PORT=8000 \
    PYTHONUNBUFFERED=1
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["rft"]
CMD ["serve"]
