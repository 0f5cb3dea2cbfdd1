# bids_qc BIDS-App: CPU-only PyTorch, shipped models and MNI template inside, no network at run time.
#
#   docker build --build-arg VERSION="$(cat version)" -t bids_qc:"$(cat version)" .
#   docker run --rm -v /path/bids:/data:ro -v /path/out:/out bids_qc:0.1.0 /data /out participant
#
# CPU wheel of torch: PyPI's Linux x86_64 torch wheel is the CUDA build (several GB of nvidia-*
# wheels). The CPU build "torch==2.13.0+cpu" comes either from a wheel staged in the build context
# under build/stage/ (scripts/container_smoke.sh copies it there from the machine's pip find-links
# directory) or, when nothing is staged, from TORCH_INDEX_URL (PyTorch's CPU index).
# Pass --build-arg TORCH_INDEX_URL= to forbid that index. Behind a TLS-intercepting proxy, stage the
# proxy's CA bundle as build/stage/ca-certificates.crt: pip in the builder stage uses it, the
# runtime image does not contain it. Details: docs/hpc.md.
#
# BASE_IMAGE: any Debian bookworm image whose `python` is CPython 3.11 with venv.
# Where Docker Hub is unreachable the smoke script builds a stand-in with debootstrap.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${BASE_IMAGE} AS builder
ARG VERSION
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# `version` always matches, so this COPY works whether or not anything was staged.
COPY version build/stag[e] /tmp/stage/
RUN if [ "${VERSION}" != "$(cat /tmp/stage/version)" ]; then \
        echo "Build with --build-arg VERSION=$(cat /tmp/stage/version) (got '${VERSION}')" >&2; \
        exit 1; \
    fi \
    && if [ -f /tmp/stage/ca-certificates.crt ]; then export PIP_CERT=/tmp/stage/ca-certificates.crt; fi \
    && python -m venv /opt/venv \
    && PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}" \
        pip install --no-cache-dir --find-links /tmp/stage "torch==${TORCH_VERSION}" \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" \
    && rm -rf /opt/venv/lib/python3.11/site-packages/torch/test \
        /opt/venv/lib/python3.11/site-packages/torch/include \
    && find /opt/venv/lib/python3.11/site-packages/torch/bin -type f ! -name torch_shm_manager -delete

# torch's C++ headers and test binaries and the packages' tests/ folders are not needed to run
# (about 330 MB). Dependencies from pyproject.toml get their own layer, so code changes do not
# reinstall them.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; d = tomllib.load(open('/tmp/pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
    && if [ -f /tmp/stage/ca-certificates.crt ]; then export PIP_CERT=/tmp/stage/ca-certificates.crt; fi \
    && pip install --no-cache-dir --find-links /tmp/stage -r /tmp/requirements.txt \
    && find /opt/venv/lib/python3.11/site-packages -depth -type d -name tests -exec rm -rf {} +

# The app itself: a wheel built from the source, installed without dependencies (the layer above
# has them). The shipped models, report templates and MNI template are package data inside it
# (bids_qc/data), found through importlib.resources: no source tree in the image.
COPY pyproject.toml version README.md /tmp/src/
COPY bids_qc /tmp/src/bids_qc
RUN if [ -f /tmp/stage/ca-certificates.crt ]; then export PIP_CERT=/tmp/stage/ca-certificates.crt; fi \
    && pip wheel --no-cache-dir --no-deps --find-links /tmp/stage --wheel-dir /tmp/wheels /tmp/src \
    && pip install --no-cache-dir --no-deps /tmp/wheels/bids_qc-*.whl \
    && rm -rf /tmp/src /tmp/wheels \
    && python -m compileall -q /opt/venv/lib/python3.11/site-packages/bids_qc \
    && chmod -R a+rX /opt/venv \
    && bids-qc --version

# ---------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
ARG VERSION
LABEL org.opencontainers.image.title="bids_qc" \
      org.opencontainers.image.description="BIDS-App: deep-learning quality control of brain T1-weighted MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.label-schema.schema-version="1.0" \
      org.label-schema.version="${VERSION}"

RUN useradd --create-home --uid 1000 --user-group --shell /bin/sh bidsqc

COPY --from=builder /opt/venv /opt/venv

# NIPYPE_NO_ET: no update check (no network at run time). PYTHONNOUSERSITE: a host ~/.local
# mounted by Singularity must not shadow the image's packages.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONNOUSERSITE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NIPYPE_NO_ET=1 \
    BIDS_QC_CONTAINER=1

USER 1000:1000
WORKDIR /home/bidsqc
ENTRYPOINT ["/opt/venv/bin/bids-qc"]
