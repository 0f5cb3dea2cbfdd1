"""The grey/white contrast (ND-WGM, as the app measures it) of a model's clean training scans,
written into its manifest as ``contrast_reference``: the app warns when a scan's contrast is
above every training scan's, where the contrast detectors were measured to miss drops of up to
37 % (``benchmarks/bench_contrast_curves.py``, model card).

    python scripts/contrast_reference.py MODEL_DIR IXI_BIDS_DIR [--nprocs 2] [--write]

Takes the IXI subjects the model trained and validated on (every subject of the BIDS folder
except the manifest's held-out ``test_subjects``), runs the app's preprocessing and metrics on
each file as acquired, prints the distribution and, with ``--write``, records it (and this
command) in ``MODEL_DIR/manifest.json``. About 2 minutes for 95 scans on 2 processes.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def nd_wgm_of(path: str) -> float:
    from bids_qc.metrics import metrics_of
    from bids_qc.preprocessing import preprocess

    return float(metrics_of(preprocess(path))[0]["nd_wgm"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("ixi", type=Path)
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    manifest_path = args.model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    held_out = set(manifest["training"]["test_subjects"])
    files = sorted(f for f in args.ixi.glob("sub-*/anat/*_T1w.nii*")
                   if f.name.split("_")[0].removeprefix("sub-") not in held_out)
    with ProcessPoolExecutor(args.nprocs) as pool:
        values = np.array(list(pool.map(nd_wgm_of, map(str, files))))
    q = dict(zip(("p1", "p5", "median", "p95", "p99"), np.percentile(values, [1, 5, 50, 95, 99]).round(4)))
    ref = {"nd_wgm_clean": {"n": int(values.size), "min": round(float(values.min()), 4),
                            **{k: float(v) for k, v in q.items()}, "max": round(float(values.max()), 4)},
           "scans": "the model's training and validation subjects, clean as acquired",
           "command": "python scripts/contrast_reference.py " + shlex.join(sys.argv[1:])}
    print(json.dumps(ref, indent=1))
    if args.write:
        manifest["contrast_reference"] = ref
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
