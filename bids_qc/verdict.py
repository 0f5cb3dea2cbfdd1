"""The verdict on one scan: detector probabilities -> positives -> grades -> tier -> review flag.

The one place where the app turns the six detectors' outputs into a decision. Scan assessment
(:mod:`bids_qc.scan`), group fine-tuning and re-scoring (:mod:`bids_qc.training.finetune_group`), the
reports and the benchmarks all call it, each detector at its own threshold: the calibrated one
in the model's manifest (:attr:`bids_qc.models.DetectorBundle.thresholds`), never a default 0.5.

- A detector *fires* when its probability is >= its threshold (:func:`positive`).
- Grade = 2 if the severe detector fires, else 1 if the moderate one does, else 0
  (:mod:`bids_qc.grading`); tier = 1 if every grade is 0, 3 if any is 2, else 2.
- Noise: the grade is the larger of the detectors' and the one the measured white-matter SNR
  gives (:mod:`bids_qc.wm_snr`: the very quantity that defines the noise grade; < 52 moderate,
  < 27.5 severe) when it could be measured. The detectors alone missed scanner-space noise on
  other scanners (balanced accuracy 50 % on held-out sites); with the measurement, tier 1+2 vs 3
  rose from 64 to 86 % there (``benchmarks/bench_scanner_space.py``, model card).
- Motion: when the slab motion model's manifest asks for it (``fuse_into_motion_grade``; the
  shipped ``slab-motion-agree-v1`` does), its verdict on the native sagittal slices is read into
  the grade (:func:`slab_fused_motion`). The 3D detectors alone were near chance on motion made in
  other scanners' space (moderate 48 % on held-out sites); fused, 73 %, and tier 1 vs 2 there rose
  from 36 to 83 % (seed 2034, ``benchmarks/SHIPPING_RULE_slab_fusion.md``).
- ``uncertainty`` (bits, summed decision entropy at each detector's threshold) and
  ``needs_review``: :func:`bids_qc.review_priority.scan_review`, the one definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_qc.grading import grades_from_probabilities, tier_from_grades
from bids_qc.record import DETECTORS
from bids_qc.review_priority import scan_review
from bids_qc.wm_snr import noise_grade


def positive(probability, threshold: float):
    """Whether a detector fires: ``probability >= threshold`` (scalars or arrays)."""
    return np.asarray(probability) >= threshold


@dataclass(frozen=True)
class Verdict:
    """What the detectors say about one scan, at the thresholds in ``thresholds``."""

    probabilities: dict[str, float]      # {detector: P(positive)}
    probability_std: dict[str, float] | None  # {detector: std over members}; None: one member
    thresholds: dict[str, float]         # {detector: threshold used}
    positives: dict[str, bool]           # {detector: fired}
    grades: dict[str, int]               # {artefact: 0|1|2}
    tier: int                            # 1 good, 2 medium, 3 reject
    uncertainty: float                   # bits (bids_qc.review_priority)
    needs_review: bool
    measured_noise_grade: int | None = None  # from the measured WM SNR; None: not measured

    def record_fields(self) -> dict:
        """The record keys this verdict sets (``probability_std`` only for an ensemble)."""
        out = {"probabilities": dict(self.probabilities)}
        if self.probability_std is not None:
            out["probability_std"] = dict(self.probability_std)
        out.update(uncertainty=self.uncertainty, needs_review=self.needs_review,
                   grades=dict(self.grades), tier=self.tier,
                   measured_noise_grade=self.measured_noise_grade)
        return out


def slab_fused_motion(grade: int, slab_motion: bool | None) -> int:
    """The motion grade of the 3D detectors read together with the slab detector's verdict on the
    native-resolution sagittal slices (``None``: not scored, the grade stands): a slab "motion"
    makes the grade at least 1; without it, a moderate call of the 3D detectors alone is dropped
    and a severe one stands."""
    if slab_motion is None:
        return grade
    if slab_motion:
        return max(grade, 1)
    return 2 if grade == 2 else 0


def verdict(probs: dict, thresholds: dict, stds: dict | None = None,
            wm_snr: float | None = None, slab_motion: bool | None = None) -> Verdict:
    """The verdict from ``{detector: probability}`` (all six), per-detector ``thresholds``, for
    an ensemble the members' ``{detector: std}``, and the scan's measured white-matter SNR
    (``None`` or NaN: the noise grade is the detectors' alone), and the slab detector's verdict
    ``slab_motion`` (:func:`slab_fused_motion`; ``None``: the motion grade is the detectors')."""
    probs = {d: float(probs[d]) for d in DETECTORS}
    thresholds = {d: float(thresholds[d]) for d in DETECTORS}
    stds = None if stds is None else {d: float(stds[d]) for d in DETECTORS}
    grades = grades_from_probabilities(probs, thresholds)
    measured = noise_grade(wm_snr)
    if measured is not None:
        grades["noise"] = max(grades["noise"], measured)
    grades["motion"] = slab_fused_motion(grades["motion"], slab_motion)
    uncertainty, needs_review = scan_review(probs, thresholds)
    return Verdict(probabilities=probs, probability_std=stds, thresholds=thresholds,
                   positives={d: bool(positive(probs[d], thresholds[d])) for d in DETECTORS},
                   grades=grades, tier=tier_from_grades(grades), uncertainty=uncertainty,
                   needs_review=needs_review, measured_noise_grade=measured)


def slab_verdict_to_fuse(slab_record: dict | None) -> bool | None:
    """The slab verdict to read into the motion grade: the record's ``motion`` when its model
    asks for fusion (``fused``), else None (the 3D detectors' grade stands)."""
    if not slab_record or not slab_record.get("fused"):
        return None
    return slab_record.get("motion")


def assess_volume(bundle, volume, wm_snr: float | None = None,
                  slab_motion: bool | None = None) -> Verdict:
    """Run ``bundle`` (a :class:`~bids_qc.models.DetectorBundle`) on one model-grid volume
    (``(D, H, W)`` float32 array or tensor, as :func:`bids_qc.preprocessing.preprocess` makes it)
    and return the verdict at the bundle's thresholds (``wm_snr``, ``slab_motion``:
    :func:`verdict`); the std term only for an ensemble."""
    import torch

    x = torch.as_tensor(np.asarray(volume))[None, None]
    mean, std = bundle.predict(x)
    probs = {d: float(mean[d][0]) for d in DETECTORS}
    stds = {d: float(std[d][0]) for d in DETECTORS} if len(bundle.members) > 1 else None
    return verdict(probs, bundle.thresholds, stds, wm_snr, slab_motion)
