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
# reinstall them. The editable install (console script `bids-qc`, import path -> /opt/bids_qc) is
# made against a stub package here, so /opt/venv stays identical, and cached, when only code changes.
COPY pyproject.toml version /opt/bids_qc/
RUN python -c "import tomllib; d = tomllib.load(open('/opt/bids_qc/pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
    && if [ -f /tmp/stage/ca-certificates.crt ]; then export PIP_CERT=/tmp/stage/ca-certificates.crt; fi \
    && pip install --no-cache-dir --find-links /tmp/stage -r /tmp/requirements.txt \
    && mkdir /opt/bids_qc/bids_qc && touch /opt/bids_qc/bids_qc/__init__.py \
    && pip install --no-cache-dir --no-deps -e /opt/bids_qc \
    && rm -rf /opt/bids_qc/bids_qc /opt/bids_qc/bids_qc.egg-info \
    && find /opt/venv/lib/python3.11/site-packages -depth -type d -name tests -exec rm -rf {} + \
    && chmod -R a+rX /opt/venv

# The source tree lives in /opt/bids_qc (models/ and reports/templates/ next to the package, where
# bids_qc.config and the report renderer look for them).
COPY run.py /opt/bids_qc/
COPY models /opt/bids_qc/models
COPY reports/templates /opt/bids_qc/reports/templates
COPY bids_qc /opt/bids_qc/bids_qc
RUN python -m compileall -q /opt/bids_qc/bids_qc /opt/bids_qc/run.py \
    && chmod -R a+rX /opt/bids_qc \
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
COPY --from=builder /opt/bids_qc /opt/bids_qc

# NIPYPE_NO_ET: no update check (no network at run time). MPLCONFIGDIR: writable under any UID
# and with a read-only home (Singularity, docker --read-only). PYTHONNOUSERSITE: a host
# ~/.local mounted by Singularity must not shadow the image's packages.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONNOUSERSITE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NIPYPE_NO_ET=1 \
    MPLCONFIGDIR=/tmp/bids_qc-matplotlib \
    BIDS_QC_CONTAINER=1

USER 1000:1000
WORKDIR /home/bidsqc
ENTRYPOINT ["/opt/venv/bin/python", "/opt/bids_qc/run.py"]
