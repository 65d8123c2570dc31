# mofdft_jax: the `mofdft` command with the pinned scientific stack, on CPU or on CUDA 12 GPUs.
#
#   docker build -t mofdft_jax .                                          # CPU image
#   docker build --build-arg VARIANT=cuda12 -t mofdft_jax:cuda12 .        # CUDA 12 image
#   docker run --rm -v "$PWD/results/quick:/home/mofdft/results" mofdft_jax
#   docker run --rm --gpus all -v "$PWD/results/quick:/home/mofdft/results" mofdft_jax:cuda12
#
# The CUDA 12 image carries the CUDA libraries as pip wheels (jax-cuda12-plugin, nvidia-*-cu12,
# cupy-cuda12x); the host needs only an NVIDIA driver >= 525.60.13 (CUDA 12) and the NVIDIA
# Container Toolkit, which provides `docker run --gpus all`.
# The container runs as user `mofdft` (uid 1000 unless built with --build-arg MOFDFT_UID=...): the
# mounted results folder must be writable by that uid, or add `--user "$(id -u):$(id -g)"`.
#
# Machines that cannot pull images, or whose egress intercepts TLS: scripts/container_check.sh
# builds a local Debian bookworm base (debootstrap + docker import) and passes it as
# --build-arg BASE_IMAGE=..., and hands the host's CA bundle to the (discarded) deps stage only.
# Only x86_64 (amd64): the lock files pin manylinux x86_64 wheels.

# Debian 12 "bookworm" slim, dated (immutable) tag + OCI index digest. The digest was read from
# docker-library/repo-info (repos/debian/remote/bookworm-20260918-slim.md); it could not be checked
# against the registry from the offline development machine.
ARG BASE_IMAGE=debian:bookworm-20260918-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

# ---------------------------------------------------------------------------------------------
# deps stage: a virtual environment filled from the hash lock only. Discarded (the runtime stage
# copies /opt/venv out of it), so the optional build-time CA bundle never reaches the image.
FROM ${BASE_IMAGE} AS deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off
# Debian bookworm's python3 is CPython 3.11, the version the lock files target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*
# requirements/<variant>.txt: `uv pip compile --generate-hashes` locks (every file hash-checked).
# .docker-build/build-ca.pem (optional, never committed): the CA bundle of a TLS-intercepting egress,
# copied in by scripts/container_check.sh; the wildcard lets the build go on when it is absent.
# (ARG VARIANT only from here on, so that both variants share the layers above)
ARG VARIANT=cpu
COPY requirements/ .docker-build/build-ca.pe[m] /tmp/build-input/
# setuptools first (hash-checked, from the lock), so that the one sdist in the lock (pdbfixer) is
# built by it (PEP 517, no isolated build environment), i.e. without unpinned downloads.
RUN lock="/tmp/build-input/${VARIANT}.txt" \
    && if [ ! -f "${lock}" ]; then echo "no lock requirements/${VARIANT}.txt (VARIANT=cpu|cuda12)" >&2; exit 1; fi \
    && if [ -f /tmp/build-input/build-ca.pem ]; then export PIP_CERT=/tmp/build-input/build-ca.pem; fi \
    && python3 -m venv /opt/venv \
    && awk '/^[^ #]/ { keep = ($0 ~ /^setuptools==/) } keep' "${lock}" > /tmp/build-input/setuptools.txt \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/build-input/setuptools.txt \
    && /opt/venv/bin/pip install --require-hashes --no-deps --no-build-isolation --use-pep517 -r "${lock}" \
    && rm -rf /tmp/build-input

# ---------------------------------------------------------------------------------------------
# build stage: the mofdft_jax wheel (no dependencies resolved, no network). A separate stage so
# that editing the sources does not invalidate the large /opt/venv layer of the runtime stage.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.m[d] /src/
COPY mofdft_jax/ /src/mofdft_jax/
COPY reproduce/ /src/reproduce/
COPY datasets/ /src/datasets/
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist /src

# ---------------------------------------------------------------------------------------------
# runtime stage: Python, the virtual environment, a non-root user.
FROM ${BASE_IMAGE} AS runtime
ARG MOFDFT_UID=1000
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid "${MOFDFT_UID}" --user-group --shell /bin/bash mofdft \
    && install -d -o mofdft -g mofdft /home/mofdft/results
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="mofdft_jax" \
      org.opencontainers.image.description="M-OFDFT (Zhang et al., Nat. Comput. Sci. 4, 210 (2024)) in JAX: the mofdft command" \
      org.opencontainers.image.licenses="MIT" \
      io.mofdft.variant="${VARIANT}"
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /tmp/dist/ /tmp/dist/
# the shipped dataset recipes and cards (read through MOFDFT_DATASETS)
COPY --from=build /src/datasets/ /opt/mofdft/datasets/
# the package itself (no dependencies, no index), then check that the lock is complete.
# cuda12: the CUDA libraries of the nvidia-*-cu12 wheels go into the linker cache. gpu4pyscf finds
# libcusolver with ctypes.util.find_library (i.e. `ldconfig -p`) and otherwise looks only for an
# unversioned libcusolver.so, which the wheel does not ship: without this `import gpu4pyscf` fails
# with "OSError: Unable to load libcusolver" (measured in the 2026-12-03 build). JAX and CuPy load
# the same files by path, so the cache changes nothing for them.
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/mofdft --version \
    && nvidia=/opt/venv/lib/python3.11/site-packages/nvidia \
    && if [ -d "${nvidia}" ]; then \
        find "${nvidia}" -mindepth 2 -maxdepth 2 -type d -name lib > /etc/ld.so.conf.d/mofdft-nvidia-wheels.conf \
        && ldconfig; \
    fi
# JAX_ENABLE_X64: float64 everywhere (the CLI switches it on too). Caches and matplotlib's config
# go to /tmp so that any --user uid works. NVIDIA_*: what the NVIDIA Container Toolkit exposes
# under `docker run --gpus all` (ignored by the CPU image).
ENV PATH="/opt/venv/bin:${PATH}" \
    JAX_ENABLE_X64=1 \
    MOFDFT_DATASETS=/opt/mofdft/datasets \
    MOFDFT_CACHE=/tmp/cache/mofdft_jax \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# numeric uid (= user mofdft), so that runtimes can verify it is not root
USER ${MOFDFT_UID}
WORKDIR /home/mofdft
ENTRYPOINT ["mofdft"]
# The default job: the quick reproduction into the mounted results folder
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/results/quick:/home/mofdft/results" IMAGE
CMD ["reproduce", "--preset", "quick", "--out", "/home/mofdft/results"]
