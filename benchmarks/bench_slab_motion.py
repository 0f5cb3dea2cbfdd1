#!/usr/bin/env python
"""Held-out, real-motion and other-scanner evaluation of slab motion detectors, in one command.

    python benchmarks/bench_slab_motion.py [--model-dir DIR ...] [--data ../shared/data]

``--model-dir`` (repeatable; default: the shipped slab model) scores every model on the very same
images, so a candidate and the shipped model are compared in one run.

1. Simulated motion on the model's held-out IXI subjects (listed in its manifest, never trained
   on), re-simulated here from the raw scans with a seed the training never used: AUC still vs
   moved per amplitude bin for the detector, Tenengrad and native SNR on the same images, and the
   detector's sensitivity/specificity at its threshold.
2. Real motion (``motion_pairs``): pairs where the moving slab scores worse than the still slab of
   the same subject and the pooled AUC, for the same three scores; the time per scan.
3. Clean scans of every other scanner of ``vendors/`` and ``singles/`` (no artefact visible): how
   many each model calls "motion", for the sites held out of all training
   (:data:`bids_qc.training.scanner_data.HELDOUT_SITES`) and for the others apart (a model may
   have trained on those: its manifest lists ``extra_training_scans``).
4. What the score reacts to without motion (:mod:`bids_qc.training.slab.confounds`): a few
   held-out IXI scans and every other-site clean scan, unchanged, blurred (1 and 2 mm Gaussian),
   with Rician noise (SNR 40 and 25), with the air zeroed or raised to a smooth floor, with 3 mm
   axial slices and after a 3x3x3 median (vendor-like filtering): a score that rises with blur
   flags clean scans of smoother scanners, one that rises with the air floor flags scanners that
   store filtered air.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_SLAB_MODEL_DIR  # noqa: E402
from bids_qc.slab_detector.detector import load_detector  # noqa: E402
from bids_qc.training.cache import find_t1w  # noqa: E402
from bids_qc.training.scanner_data import HELDOUT_SITES, shared_data_sources  # noqa: E402
from bids_qc.training.slab import confounds, evaluation  # noqa: E402
from bids_qc.training.slab.cache import build_cache  # noqa: E402
from bids_qc.training.slab.train import load_stacks  # noqa: E402


def clean_other_sites(detector, data: Path) -> dict:
    """Scores and verdicts on the clean scans of every non-IXI site, and the counts flagged."""
    import nibabel as nib
    import numpy as np

    trained_on = {Path(p).name for p in detector.manifest.get("training", {}).get("extra_training_scans", [])}
    rows = []
    for name, site, path in shared_data_sources(data):
        if site == "ixi-hh":
            continue
        img = nib.load(str(path))
        r = detector.assess(np.asarray(img.dataobj, np.float32), img.affine)
        group = ("held-out site" if site in HELDOUT_SITES else
                 "trained on" if path.name in trained_on else "other site, not trained on")
        rows.append({"scan": name, "site": site, "group": group, "score": r["score"], "motion": r["motion"]})
    counts = {}
    for r in rows:
        c = counts.setdefault(r["group"], {"flagged": 0, "scans": 0})
        c["scans"] += 1
        c["flagged"] += bool(r["motion"])
    return {"rows": rows, "counts": counts}


def confound_rows(detector, data: Path, ixi_subjects: list[str]) -> list[dict]:
    """:func:`confounds.responses` for the given IXI subjects and every other-site clean scan."""
    import nibabel as nib
    import numpy as np

    rows = []
    for name, site, path in shared_data_sources(data):
        if site == "ixi-hh" and name not in ixi_subjects:
            continue
        img = nib.load(str(path))
        rows.append({"scan": name, "site": site,
                     "responses": confounds.responses(detector, np.asarray(img.dataobj, np.float32),
                                                      img.affine)})
    return rows


def format_clean(model_id: str, clean: dict) -> str:
    lines = [f"Clean scans of other scanners, {model_id}: 'motion' verdicts", "",
             "| scan | site | group | score | motion |", "|---|---|---|---|---|"]
    for r in clean["rows"]:
        score = "n/a" if r["score"] is None else f"{r['score']:.3f}"
        lines.append(f"| {r['scan']} | {r['site']} | {r['group']} | {score} | {r['motion']} |")
    lines += [""] + [f"{g}: {c['flagged']} of {c['scans']} flagged" for g, c in clean["counts"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, action="append",
                    help="a slab model folder; repeat to compare (default: the shipped one)")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--variants", type=int, default=8, help="simulated motions per held-out subject")
    ap.add_argument("--seed", type=int, default=1234, help="simulation seed (training used 0)")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--confound-ixi", type=int, default=4,
                    help="held-out IXI scans in the blur/noise probe (section 4)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    detectors = [load_detector(d) for d in (args.model_dir or [DEFAULT_SLAB_MODEL_DIR])]
    tests = [set(d.manifest["training"]["test_subjects"]) for d in detectors]
    if any(t != tests[0] for t in tests):
        print("the models hold out different IXI subjects: simulated figures use each model's own")
    ixi, pairs = args.data / "ixi", args.data / "motion_pairs"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        if ixi.is_dir():
            scans = [(s, p) for s, p in find_t1w(ixi) if s in set().union(*tests)]
            t = time.perf_counter()
            paths = build_cache(scans, tmp, args.variants, args.seed, args.nprocs)
            print(f"simulated {len(paths)} held-out subjects x {args.variants} still/moved pairs in "
                  f"{time.perf_counter() - t:.0f} s")
        else:
            print(f"no IXI data at {ixi}: simulated evaluation skipped")
        for detector, test in zip(detectors, tests):
            sim = real = clean = probe = None
            if paths:
                sim = evaluation.simulated(detector, load_stacks(paths, sorted(s for s in paths if s in test)))
            if pairs.is_dir():
                t = time.perf_counter()
                real = evaluation.real_pairs(detector, pairs)
                per_scan = (time.perf_counter() - t) / max(len(real["rows"]), 1)
                print(f"real pairs: {len(real['rows'])} slabs, {per_scan:.2f} s/slab (detector + both formulas)")
            else:
                print(f"no motion pairs at {pairs}: real-motion evaluation skipped")
            if (args.data / "vendors").is_dir():
                clean = clean_other_sites(detector, args.data)
                probe = confound_rows(detector, args.data, sorted(test)[:args.confound_ixi])
            print(f"\n## model {detector.model_id}, threshold {detector.threshold:.4g}\n")
            print(evaluation.format_tables(sim, real))
            if clean:
                print("\n" + format_clean(detector.model_id, clean))
            if probe:
                print("\n" + confounds.format_table(detector.model_id, probe))
            results[detector.model_id] = {"threshold": detector.threshold,
                                          "simulated": sim and sim["table"],
                                          "real_pairs": real and real["summary"],
                                          "real_rows": real and real["rows"], "clean_other_sites": clean,
                                          "confounds": probe}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
