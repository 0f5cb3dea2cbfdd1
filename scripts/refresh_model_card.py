#!/usr/bin/env python
"""Refresh a model folder's reference outputs and MODEL_CARD.md after training.

    python benchmarks/bench_heldout.py --model-dir models/X --json heldout.json
    python benchmarks/bench_draws.py --model-dir models/X --json draws.json   # optional, several seeds
    python benchmarks/bench_intensity_observer.py --model-dir models/X --cache-dir CACHE --json observer.json  # optional
    python scripts/refresh_model_card.py models/X --heldout heldout.json --limits limits.md [--draws draws.json]
        [--observer observer.json]

1. ``reference_outputs.json``: the model's probabilities, grades and tier on the bundled example
   (``examples/ixi_mini``); ``tests/test_shipped_model.py`` checks that they stay stable.
2. ``MODEL_CARD.md``: rendered from the manifest, the held-out benchmark's JSON (optional), the
   several-draw summary's JSON (optional), the intensity observer's JSON (optional) and a Markdown file of limits (optional), by :func:`bids_qc.training.model_card.render_model_card`.

Neither file is listed in the manifest's checksums (only weights are), so the checksums stay valid.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.scan import assess_scan  # noqa: E402
from bids_qc.training.model_card import render_model_card  # noqa: E402

EXAMPLE = ROOT / "examples" / "ixi_mini"


def reference_outputs(bundle) -> dict:
    ref = {"note": "assess_scan outputs of this model on the bundled example "
                   "(tests/test_shipped_model.py)", "scans": {}}
    for scan in sorted(EXAMPLE.glob("sub-*/anat/*_T1w.nii.gz")):
        record = assess_scan(scan, bundle, want_images=False).record
        rel = str(scan.relative_to(ROOT))
        ref["scans"][rel] = {k: record[k] for k in ("probabilities", "grades", "tier")}
        print(f"{rel}: tier {record['tier']} {record['grades']}")
    return ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--heldout", type=Path, help="JSON written by benchmarks/bench_heldout.py --json")
    ap.add_argument("--limits", type=Path, help="Markdown text for the card's Limits section")
    ap.add_argument("--draws", type=Path, help="JSON written by benchmarks/bench_draws.py --json")
    ap.add_argument("--observer", type=Path, help="JSON written by benchmarks/bench_intensity_observer.py --json")
    args = ap.parse_args(argv)
    bundle = load_bundle(args.model_dir)
    ref = reference_outputs(bundle)
    (args.model_dir / "reference_outputs.json").write_text(json.dumps(ref, indent=1) + "\n")
    heldout = json.loads(args.heldout.read_text()) if args.heldout else None
    limits = args.limits.read_text() if args.limits else ""
    draws, observer = (json.loads(a.read_text()) if a else None for a in (args.draws, args.observer))
    (args.model_dir / "MODEL_CARD.md").write_text(render_model_card(bundle.manifest, heldout, limits, draws,
                                                                    observer))
    print(f"wrote {args.model_dir / 'reference_outputs.json'} and {args.model_dir / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
