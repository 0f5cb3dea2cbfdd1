#!/usr/bin/env bash
# SLURM integration check for bids_qc on one machine.
#
# Starts a private single-node SLURM cluster (munged + slurmctld + slurmd, configuration and state
# in a temporary folder, nothing in /etc touched), then runs the participant level three ways on
# the same dataset and checks that they give the same results:
#   1. MultiProc (reference), twice (a control for run-to-run reproducibility),
#   2. --plugin SLURM (nipype submits one sbatch job per scan),
#   3. the job-array recipe of docs/hpc.md, extracted from the document and submitted as written
#      (one participant per array task, then a group job with --dependency=afterany),
# plus the group level after 1 and 2. Stops the daemons it started on exit.
#
# Usage: scripts/slurm_integration.sh [--dataset DIR] [--keep]
#   --dataset  BIDS dataset (default: examples/ixi_mini)
#   --keep     keep the temporary folder (outputs, logs, slurm.conf)
# Needs root (munged/slurmd) and the Debian packages slurm-wlm and munge (installed if missing).
# Environment: PYTHON (default python3) must import bids_qc and its dependencies.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATASET="$ROOT/examples/ixi_mini"
KEEP=0
PYTHON=${PYTHON:-python3}

log() { printf '[slurm_integration] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dataset) DATASET=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ -d "$DATASET" ] || die "dataset $DATASET not found"
DATASET=$(cd "$DATASET" && pwd)
[ "$(id -u)" = 0 ] || die "needs root (starts munged and slurmd)"
"$PYTHON" -c "import bids_qc" 2>/dev/null || die "$PYTHON cannot import bids_qc (pip install -e .)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge \
        >/dev/null
fi

D=$(mktemp -d "${TMPDIR:-/tmp}/bids_qc_slurm.XXXXXX")
chmod 755 "$D"   # the job steps run as root here, but keep the tree readable like a shared FS
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then log "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT

# --------------------------------------------------------------------------- private cluster
mkdir -p "$D/munge" "$D/munge-run" "$D/state" "$D/spool" "$D/log" "$D/bin"
chmod 700 "$D/munge"
chmod 755 "$D/munge-run"
dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$D/munge/munge.key"
munged --foreground --force --socket="$D/munge-run/munge.socket" --key-file="$D/munge/munge.key" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/log/munged.log" \
    --seed-file="$D/munge/munged.seed" >"$D/log/munged.stdout" 2>&1 &
PIDS+=($!)

NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
export SLURM_CONF="$D/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=bidsqc
SlurmctldHost=$NODE
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge-run/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
sleep 1
slurmctld -D -i -f "$SLURM_CONF" >"$D/log/slurmctld.stdout" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" >"$D/log/slurmd.stdout" 2>&1 &
PIDS+=($!)
for _ in $(seq 60); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "${state:-}" = idle ] || { tail "$D"/log/*.log >&2; die "the SLURM node did not come up (state '${state:-}')"; }
log "SLURM $(sinfo -V | awk '{print $2}') up: node $NODE, $CPUS CPUs, partition debug (config $SLURM_CONF)"

# `bids-qc` as the docs use it, bound to this checkout and this interpreter
cat > "$D/bin/bids-qc" <<EOF
#!/bin/sh
exec "$(command -v "$PYTHON")" "$ROOT/run.py" "\$@"
EOF
chmod +x "$D/bin/bids-qc"
# count squeue calls (nipype polls every job at the workflow's poll_sleep_duration)
cat > "$D/bin/squeue" <<EOF
#!/bin/sh
echo x >> "$D/log/squeue_calls"
exec "$(command -v squeue)" "\$@"
EOF
chmod +x "$D/bin/squeue"
export PATH="$D/bin:$PATH" OMP_NUM_THREADS=1 NIPYPE_NO_ET=1
# nipype's SLURM plugin names jobs after $LOGNAME and fails with KeyError without it (it is unset
# in containers, cron and some CI shells; login shells on a cluster have it).
export LOGNAME="${LOGNAME:-$(id -un)}"

wait_jobs() {  # wait_jobs JOBID...: until none is queued or running, then print their states
    local t0=$SECONDS
    while squeue -h -j "$(IFS=,; echo "$*")" 2>/dev/null | grep -q .; do
        [ $((SECONDS - t0)) -lt 1800 ] || die "jobs $* still running after 30 min"
        sleep 2
    done
    local j
    for j in "$@"; do
        scontrol -o show job "$j" | tr ' ' '\n' | grep -E '^(JobId|JobState|ExitCode)=' | tr '\n' ' '
        echo
    done
}

timed() {  # timed NAME CMD...: run, log the wall time, fail loudly
    local name=$1; shift
    local t0 rc=0
    t0=$(date +%s.%N)
    "$@" >"$D/log/$name.log" 2>&1 || rc=$?
    log "$name: exit $rc, $("$PYTHON" -c "import time; print(round(time.time() - $t0, 1))") s"
    [ "$rc" = 0 ] || { tail -25 "$D/log/$name.log" >&2; die "$name failed (log $D/log/$name.log)"; }
}

N_SCANS=$(find "$DATASET" -path '*/anat/*_T1w.nii*' | wc -l)
log "dataset $DATASET: $N_SCANS T1w scans"

# --------------------------------------------------------------------------- 1. MultiProc
timed multiproc_participant bids-qc "$DATASET" "$D/out_multiproc" participant \
    --nprocs "$CPUS" --work-dir "$D/work_multiproc"
timed multiproc_group bids-qc "$DATASET" "$D/out_multiproc" group
# control: a second MultiProc run tells "SLURM changed the results" from "the pipeline is not
# reproducible run to run"
timed multiproc_again_participant bids-qc "$DATASET" "$D/out_multiproc_again" participant \
    --nprocs "$CPUS" --work-dir "$D/work_multiproc_again"
timed multiproc_again_group bids-qc "$DATASET" "$D/out_multiproc_again" group

# --------------------------------------------------------------------------- 2. nipype SLURM
timed slurm_plugin_participant bids-qc "$DATASET" "$D/out_slurm_plugin" participant \
    --plugin SLURM --work-dir "$D/work_slurm_plugin" \
    --plugin-args '{"sbatch_args": "--time=00:20:00 --mem=2G -c 1"}'
n_batch=$(find "$D/work_slurm_plugin" -name 'batchscript_*.sh' | wc -l)
log "nipype submitted $n_batch sbatch job(s) and called squeue $(wc -l < "$D/log/squeue_calls") times"
[ "$n_batch" -ge "$N_SCANS" ] || die "expected at least $N_SCANS sbatch jobs, found $n_batch"
timed slurm_plugin_group bids-qc "$DATASET" "$D/out_slurm_plugin" group

# --------------------------------------------------------------------------- 3. job array (docs)
awk '/<!-- bids_qc.sbatch:begin -->/ {on=1; next} /<!-- bids_qc.sbatch:end -->/ {on=0}
     on && !/^```/' "$ROOT/docs/hpc.md" > "$D/bids_qc.sbatch"
grep -q '^#SBATCH' "$D/bids_qc.sbatch" || die "no sbatch recipe found in docs/hpc.md"
export BIDS_DIR="$DATASET" OUT_DIR="$D/out_array"
mkdir -p "$OUT_DIR" "$D/array_logs"
(
    cd "$D/array_logs"
    t0=$(date +%s.%N)
    n=$(find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' | wc -l)
    jid=$(sbatch --parsable --array=1-"$n"%50 "$D/bids_qc.sbatch" participant)
    gid=$(sbatch --parsable --dependency=afterany:"$jid" "$D/bids_qc.sbatch" group)
    log "submitted array job $jid (1-$n) and group job $gid"
    wait_jobs "$jid" "$gid" > "$D/log/array_states.txt"
    log "array + group: $("$PYTHON" -c "import time; print(round(time.time() - $t0, 1))") s"
)
cat "$D/log/array_states.txt" >&2
if grep -v 'JobState=COMPLETED ExitCode=0:0' "$D/log/array_states.txt" | grep -q JobId; then
    cat "$D/array_logs"/slurm-*.out >&2 || true
    die "a job of the array recipe did not complete with exit 0"
fi

# --------------------------------------------------------------------------- compare
"$PYTHON" - "$D/out_multiproc" "$D/out_multiproc_again" "$D/out_slurm_plugin" "$D/out_array" <<'PY'
"""Records and group tables of the three runs must agree (timings and paths aside)."""
import json
import math
import sys
from pathlib import Path

import pandas as pd

IGNORED_KEYS = {"timings"}          # wall-clock seconds differ from run to run
RTOL = 1e-5                         # float32 metrics: summation order moves the 7th digit


def load(out):
    records = {}
    for path in sorted(Path(out).glob("sub-*/**/*_qc.json")):
        record = json.loads(path.read_text())
        records[path.relative_to(out).as_posix()] = {
            k: v for k, v in record.items() if k not in IGNORED_KEYS}
    return records


def diff(a, b, where, out):
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            out.append(f"{where}: keys {sorted(a.keys() ^ b.keys())}")
        for key in a.keys() & b.keys():
            diff(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{where}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float):
        if not math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9):
            out.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


reference, *others = sys.argv[1:]
ref = load(reference)
assert ref, f"no records in {reference}"
failed = {}
for other in others:
    problems = []
    got = load(other)
    if got.keys() != ref.keys():
        problems.append(f"files differ: {sorted(got.keys() ^ ref.keys())}")
    for name in sorted(ref.keys() & got.keys()):
        diff(ref[name], got[name], name, problems)
    t_ref = pd.read_csv(Path(reference) / "group_T1w.tsv", sep="\t")
    t_got = pd.read_csv(Path(other) / "group_T1w.tsv", sep="\t")
    keep = [c for c in t_ref.columns if not c.startswith("time")]
    try:
        pd.testing.assert_frame_equal(t_ref[keep], t_got[keep], rtol=RTOL, check_like=True)
    except (AssertionError, KeyError) as exc:
        problems.append("group_T1w.tsv: " + " ".join(str(exc).split())[:300])
    label = Path(other).name.removeprefix("out_")
    if problems:
        failed[label] = problems
        print(f"[slurm_integration] {label} vs multiproc: {len(problems)} difference(s), e.g.\n  "
              + "\n  ".join(problems[:8]), file=sys.stderr)
    else:
        print(f"[slurm_integration] {label} vs multiproc: identical", file=sys.stderr)
if failed:
    if "multiproc_again" in failed:
        print("[slurm_integration] MISMATCH, but two MultiProc runs already differ: the pipeline "
              "is not reproducible run to run (random seeds, multi-threaded ITK), SLURM is not "
              "the cause", file=sys.stderr)
    else:
        print("[slurm_integration] MISMATCH: SLURM runs differ from MultiProc", file=sys.stderr)
    sys.exit(1)
tiers = {Path(k).name: v["tier"] for k, v in ref.items()}
print(f"[slurm_integration] {len(ref)} records and group_T1w.tsv identical across MultiProc (x2), "
      f"SLURM plugin and job array (timings aside, rtol {RTOL}); tiers {tiers}", file=sys.stderr)
PY
log "OK"
