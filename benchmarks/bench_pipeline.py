#!/usr/bin/env python
"""Benchmark the BIDS-App end to end: seconds per scan per stage, scans/minute, peak memory.

    python benchmarks/bench_pipeline.py                          # examples/ixi_mini
    python benchmarks/bench_pipeline.py ../shared/data/ixi --limit 10 100 --nprocs 1 2

Each configuration runs ``run.py <dataset> <fresh out> participant --nprocs N`` in a child
process (cold start: model loading and BIDS indexing included in the wall time), then reads
the per-stage timings that every ``_qc.json`` records. Peak RSS is ``ru_maxrss`` of this
process and of its waited-for children (the largest single process, not a sum).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def subjects_with_t1w(bids_dir: Path) -> list[str]:
    """Sorted labels (without ``sub-``) of the subjects that have a T1w."""
    return sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir()
                  and (any(p.glob("anat/*_T1w.nii*")) or any(p.glob("ses-*/anat/*_T1w.nii*"))))


def run_app(bids_dir: Path, out: Path, nprocs: int, labels: list[str], extra: list[str]) -> float:
    cmd = [sys.executable, str(ROOT / "run.py"), str(bids_dir), str(out), "participant",
           "--nprocs", str(nprocs), "--participant-label", *labels, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 65):
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"run.py exited {proc.returncode}: {' '.join(cmd)}")
    return wall


def stage_table(out: Path) -> tuple[dict[str, list[float]], int, int]:
    """Per-stage seconds over the ok scans, and the numbers of ok and failed scans."""
    stages: dict[str, list[float]] = {}
    n_ok = n_err = 0
    for path in sorted(out.glob("sub-*/**/*_qc.json")):
        record = json.loads(path.read_text())
        if record.get("status") != "ok":
            n_err += 1
            continue
        n_ok += 1
        for stage, seconds in (record.get("timings") or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    return stages, n_ok, n_err


def print_run(nprocs, wall, stages, n_ok, n_err) -> None:
    n = n_ok + n_err
    print(f"\n--nprocs {nprocs}: {n} scans ({n_err} failed) in {wall:.1f} s wall -> "
          f"{60 * n / wall:.1f} scans/min end to end (cold start included)", flush=True)
    print(f"  {'stage':<14}{'median s':>10}{'mean s':>10}{'max s':>10}")
    for stage, values in stages.items():
        print(f"  {stage:<14}{statistics.median(values):>10.2f}"
              f"{statistics.fmean(values):>10.2f}{max(values):>10.2f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "examples" / "ixi_mini")
    parser.add_argument("--limit", type=int, nargs="+", default=[None],
                        help="first N subjects only; several values show how time grows with N")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-reports", action="store_true", help="pass --no-reports to the app")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model folder to pass to the app (default: the shipped one)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write outputs under this folder instead of a deleted temp folder")
    args = parser.parse_args(argv)

    all_labels = subjects_with_t1w(args.dataset)
    if not all_labels:
        raise SystemExit(f"no subjects with a T1w in {args.dataset}")
    extra = ["--no-reports"] if args.no_reports else []
    if args.model_dir:
        extra += ["--model-dir", str(args.model_dir)]
    print(f"dataset {args.dataset} ({len(all_labels)} subjects), reports "
          f"{'off' if args.no_reports else 'on'}, OMP_NUM_THREADS=1, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bids_qc_bench_") as tmp:
        base = args.keep or Path(tmp)
        for limit in args.limit:
            labels = all_labels[:limit] if limit else all_labels
            for nprocs in args.nprocs:
                out = base / f"out_n{len(labels)}_nprocs{nprocs}"
                wall = run_app(args.dataset, out, nprocs, labels, extra)
                stages, n_ok, n_err = stage_table(out)
                results.append((nprocs, wall, stages, n_ok, n_err))
                print_run(*results[-1])
    print("\nscans  nprocs  wall s  scans/min  wall s/scan")
    for nprocs, wall, _, n_ok, n_err in results:
        n = n_ok + n_err
        print(f"{n:>5}  {nprocs:>6}  {wall:>6.1f}  {60 * n / wall:>9.1f}  {wall / n:>11.2f}")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak RSS: largest child process {child_mb:.0f} MB, this script {self_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
