"""Combine trained slab model folders into one whose verdict is motion only when every member
says motion at its own threshold (bids_qc.slab_detector.detector.save_agreeing_detector).

    python scripts/agree_slab_models.py OUT_DIR --model-id slab-motion-agree-v1 MEMBER_DIR MEMBER_DIR ... \
        [--fuse-into-motion-grade]

The members must hold out the same IXI subjects (the benchmarks read them from the manifest).
The new folder scores like any slab model (`bids_qc run ... --slab-model-dir OUT_DIR`,
`benchmarks/bench_slab_sites.py --model-dir OUT_DIR`); its threshold is 0.5 on the combined score.
``--fuse-into-motion-grade`` writes ``"fuse_into_motion_grade": true`` in the manifest: the app then
lets the folder's verdict set the 3D motion grade (bids_qc.verdict.slab_fused_motion); give it
only when a shipping rule has passed for this combination (benchmarks/SHIPPING_RULE_slab_fusion.md).
The manifest records this command and each member's training command.
``--heldout-ixi`` (the IXI BIDS folder; simulates the held-out subjects' still/moved pairs with
``--heldout-seed``, no site or PSF variation, into ``--cache-dir``) or ``--heldout-cache`` (a slab
cache folder of ``bids-qc-train-slab``, e.g. a member's), and ``--real-pairs``, write
heldout_benchmark.json as training does: the combined verdict on the still/moved pairs of the
held-out IXI subjects, and on the real motion pairs.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bids_qc.slab_detector.detector import load_detector, save_agreeing_detector


def simulate_heldout(ixi: Path, subjects, cache_dir: Path, seed: int, variants: int) -> dict[str, Path]:
    """Cache ``variants`` still/moved pairs of each held-out IXI subject (training simulator, plain
    acquisitions: no site or PSF variation); returns ``{subject: cached file}``."""
    from bids_qc.training.cache import find_t1w
    from bids_qc.training.slab.cache import build_cache

    scans = [(s, p) for s, p in find_t1w(ixi) if s in set(subjects)]
    return build_cache(scans, cache_dir, variants, seed, nprocs=2, p_site=0.0, p_psf=0.0)


def write_heldout_benchmark(folder: Path, test_subjects, cached: dict[str, Path] | None,
                            pairs: Path | None) -> None:
    """heldout_benchmark.json of the new folder, as training writes it, plus the cache's name."""
    from bids_qc.training.slab import evaluation
    from bids_qc.training.slab.train import load_stacks

    detector = load_detector(folder)
    held = real = cache_name = None
    if cached is not None:
        stacks = load_stacks(cached, test_subjects)
        if not stacks:
            raise SystemExit("none of the held-out subjects is cached (or found in the IXI folder)")
        held = evaluation.simulated(detector, stacks)
        cache_name = next(iter(cached.values())).parent.name
    if pairs:
        real = evaluation.real_pairs(detector, pairs)
    evaluation.write_heldout_benchmark(folder, held, real, heldout_cache=cache_name)
    print(evaluation.format_tables(held, real))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("members", type=Path, nargs="+")
    p.add_argument("--model-id", required=True)
    p.add_argument("--fuse-into-motion-grade", action="store_true",
                   help="the app fuses this folder's verdict into the 3D motion grade")
    p.add_argument("--heldout-cache", type=Path, help="slab cache folder holding the held-out subjects")
    p.add_argument("--heldout-ixi", type=Path, help="IXI BIDS folder: simulate the held-out subjects here")
    p.add_argument("--heldout-seed", type=int, default=1234, help="simulation seed (training used 0)")
    p.add_argument("--heldout-variants", type=int, default=12, help="still/moved pairs per subject")
    p.add_argument("--cache-dir", type=Path, default=Path("slab_heldout_cache"),
                   help="where --heldout-ixi caches its pairs")
    p.add_argument("--real-pairs", type=Path, help="folder with labels.tsv of real motion pairs")
    args = p.parse_args(argv)
    members = [load_detector(m) for m in args.members]
    tests = {tuple(m.manifest["training"]["test_subjects"]) for m in members}
    if len(tests) != 1:
        print("the members hold out different IXI subjects; refusing to combine them", file=sys.stderr)
        return 1
    training = {"test_subjects": list(tests.pop()),
                "extra_training_scans": sorted({s for m in members
                                                for s in m.manifest["training"].get("extra_training_scans", [])})}
    command = "python scripts/agree_slab_models.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    extra = {"command": command, "training": training}
    if args.fuse_into_motion_grade:
        extra["fuse_into_motion_grade"] = True
    folder = save_agreeing_detector(args.out_dir, members, model_id=args.model_id, extra=extra)
    print(f"wrote {folder}: motion when all of {', '.join(m.model_id for m in members)} say motion")
    cached = None
    if args.heldout_ixi:
        cached = simulate_heldout(args.heldout_ixi, training["test_subjects"], args.cache_dir,
                                  args.heldout_seed, args.heldout_variants)
    elif args.heldout_cache:
        cached = {p.stem.removeprefix("sub-"): p for p in sorted(args.heldout_cache.glob("sub-*.npz"))}
    if cached is not None or args.real_pairs:
        write_heldout_benchmark(folder, training["test_subjects"], cached, args.real_pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
