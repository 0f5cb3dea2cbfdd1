"""Combine trained slab model folders into one whose verdict is motion only when every member
says motion at its own threshold (bids_qc.slab_detector.detector.save_agreeing_detector).

    python scripts/agree_slab_models.py OUT_DIR --model-id slab-motion-agree-v1 MEMBER_DIR MEMBER_DIR ...

The members must hold out the same IXI subjects (the benchmarks read them from the manifest).
The new folder scores like any slab model (`bids_qc run ... --slab-model-dir OUT_DIR`,
`benchmarks/bench_slab_sites.py --model-dir OUT_DIR`); its threshold is 0.5 on the combined score.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bids_qc.slab_detector.detector import load_detector, save_agreeing_detector


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("members", type=Path, nargs="+")
    p.add_argument("--model-id", required=True)
    args = p.parse_args(argv)
    members = [load_detector(m) for m in args.members]
    tests = {tuple(m.manifest["training"]["test_subjects"]) for m in members}
    if len(tests) != 1:
        print("the members hold out different IXI subjects; refusing to combine them", file=sys.stderr)
        return 1
    training = {"test_subjects": list(tests.pop()),
                "extra_training_scans": sorted({s for m in members
                                                for s in m.manifest["training"].get("extra_training_scans", [])})}
    folder = save_agreeing_detector(args.out_dir, members, model_id=args.model_id,
                                    extra={"training": training})
    print(f"wrote {folder}: motion when all of {', '.join(m.model_id for m in members)} say motion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
