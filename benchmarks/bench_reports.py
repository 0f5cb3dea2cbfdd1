#!/usr/bin/env python
"""Cost of the HTML reports and of Grad-CAM (issue 7 budgets: < 0.5 s per participant report,
< 0.3 s per detector saliency at 64x80x64 on one thread).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_reports.py [--data ../shared/data] [--repeats 5]``

Prints one line per case: median wall time, median CPU time of the calling thread (the
budget; wall time also counts waiting for a busy machine) and the HTML size. Real scans from the
shared data are used when present (an IXI head, the 0.7 mm studyforrest head), otherwise the
bundled template stands in.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _demo_module():
    spec = importlib.util.spec_from_file_location("check_reports_chromium",
                                                  ROOT / "scripts" / "check_reports_chromium.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median wall s, median CPU s of this thread, result) after one warm-up call.

    CPU time is what the budget is about: on a shared machine wall time includes waiting."""
    result = fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return statistics.median(wall), statistics.median(cpu), result


def load_ras(path: Path):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj, dtype=np.float32), tuple(float(z) for z in img.header.get_zooms()[:3])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("BIDS_QC_DATA", ROOT / ".." / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import pandas as pd

    from bids_qc.record import DETECTORS
    from bids_qc.reports import render_group_report, render_participant_report

    demo = _demo_module()
    probs = {"motion_moderate": 0.91, "motion_severe": 0.62, "noise_moderate": 0.12,
             "noise_severe": 0.03, "contrast_moderate": 0.55, "contrast_severe": 0.08}
    cases = [("template 99x117x95 @2 mm", None, (2.0, 2.0, 2.0))]
    ixi = sorted((args.data / "ixi").glob("sub-*/anat/*_T1w.nii.gz"))
    if ixi:
        cases.append((f"IXI {ixi[0].name}", *load_ras(ixi[0])))
    big = args.data / "singles" / "sub-studyforrest" / "anat" / "sub-studyforrest_T1w.nii.gz"
    if big.is_file():
        cases.append(("studyforrest 274x384x384 @0.7 mm", *load_ras(big)))
    print(f"participant report (3 positive detectors with saliency), {args.repeats} repeats, 1 thread")
    for label, native, zooms in cases:
        a = demo.demo_assessment("sub-01_ses-1_run-1_T1w", native=native, zooms=zooms, probabilities=probs)
        wall, cpu, text = timed(lambda a=a: render_participant_report(a), args.repeats)
        print(f"  {label:38s} wall {wall:.3f} s  cpu {cpu:.3f} s  html {len(text) / 1e6:.2f} MB")
    err = demo.demo_assessment("sub-02_T1w", error=True)
    wall, cpu, text = timed(lambda: render_participant_report(err), args.repeats)
    print(f"  {'error scan (no images)':38s} wall {wall:.3f} s  cpu {cpu:.3f} s  html {len(text) / 1e6:.2f} MB")

    print("group report")
    rng = np.random.default_rng(0)
    for n in (115, 1000):
        tiers = rng.integers(1, 4, n)
        table = pd.DataFrame({
            "bids_name": [f"sub-{i:04d}_T1w" for i in range(n)],
            "source_file": [f"/nonexistent/sub-{i:04d}/anat/sub-{i:04d}_T1w.nii.gz" for i in range(n)],
            "subject": [f"{i:04d}" for i in range(n)], "status": ["ok"] * (n - 3) + ["error"] * 3,
            "error": [None] * (n - 3) + ["file is empty"] * 3, "tier": tiers,
            **{f"grade_{a}": rng.integers(0, 3, n) for a in ("motion", "noise", "contrast")},
            **{f"p_{d}": rng.uniform(0, 1, n) for d in DETECTORS},
            "snr": rng.normal(20, 4, n), "nd_wgm": rng.normal(0.3, 0.05, n),
            "aes": rng.normal(0.4, 0.05, n), "tenengrad": rng.normal(3, 0.5, n),
            "model_id": "conv5fc3-ixi-v2.6", "needs_review": rng.uniform(0, 1, n) < 0.1,
            "uncertainty": rng.uniform(0, 1, n), "site": rng.choice(["HH", "Guys", "IOP"], n)})
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu, text = timed(lambda t=table, d=tmp: render_group_report(
                t, Path(d) / "group_qc.html", Path(d)), max(1, args.repeats // 2))
        print(f"  {n:5d} scans{'':27s} wall {wall:.3f} s  cpu {cpu:.3f} s  html {len(text) / 1e6:.2f} MB")

    try:
        from bids_qc.networks import Conv5FC3
    except ImportError:
        print("Grad-CAM: bids_qc.networks not available, skipped")
        return 0
    from bids_qc.saliency import forward_with_cam, grad_cam

    torch.manual_seed(0)
    net = Conv5FC3((64, 80, 64)).eval()
    x = torch.rand(1, 1, 64, 80, 64)
    with torch.no_grad():
        plain, plain_cpu, _ = timed(lambda: net(x), args.repeats)
    cam, cam_cpu, _ = timed(lambda: grad_cam(net, x), args.repeats)
    both, both_cpu, _ = timed(lambda: forward_with_cam(net, x), args.repeats)
    print("Grad-CAM, Conv5FC3 at 64x80x64, 1 thread")
    print(f"  plain eval forward (no_grad)           wall {plain:.3f} s  cpu {plain_cpu:.3f} s")
    print(f"  grad_cam (forward + head backward)     wall {cam:.3f} s  cpu {cam_cpu:.3f} s")
    print(f"  forward_with_cam: extra over forward   wall {both - plain:+.3f} s  cpu {both_cpu - plain_cpu:+.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
