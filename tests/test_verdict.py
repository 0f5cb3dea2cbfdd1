"""The one inference path: probabilities -> positives -> grades -> tier -> review flag."""
import numpy as np
import pandas as pd
import pytest
import torch

from bids_qc.models import load_bundle, make_untrained_bundle, save_bundle
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.training.finetune_group import rescore
from bids_qc.verdict import assess_volume, positive, verdict

SMALL = ModelGrid(shape=(16, 20, 16))


def test_grades_and_tier_use_each_detectors_own_threshold():
    probs = {d: 0.01 for d in DETECTORS} | {"motion_moderate": 0.6, "noise_severe": 0.55}
    thresholds = {d: 0.5 for d in DETECTORS} | {"motion_moderate": 0.7, "noise_severe": 0.5}
    v = verdict(probs, thresholds)
    assert v.positives["motion_moderate"] is False and v.positives["noise_severe"] is True
    assert v.grades == {"motion": 0, "noise": 2, "contrast": 0} and v.tier == 3
    # the same probabilities at 0.5 everywhere would grade motion 1: the thresholds matter
    assert verdict(probs, {d: 0.5 for d in DETECTORS}).grades["motion"] == 1
    # the threshold itself fires (>=)
    assert positive(0.7, 0.7) and not positive(0.6999, 0.7)
    assert verdict(probs | {"motion_moderate": 0.7}, thresholds).grades["motion"] == 1


def test_tiers_and_review():
    low = {d: 0.0 for d in DETECTORS}
    thresholds = {d: 0.8 for d in DETECTORS}
    assert verdict(low, thresholds).tier == 1
    moderate = verdict(low | {"contrast_moderate": 0.88}, thresholds)
    assert moderate.tier == 2 and moderate.grades["contrast"] == 1
    # uncertainty: bids_qc.review_priority's, the one definition (p 0.88 at threshold 0.8 is
    # near it: q = 0.65, 0.94 bit, plus five clear detectors' ~0 bits)
    from bids_qc.review_priority import REVIEW_BITS, scan_review

    assert (moderate.uncertainty, moderate.needs_review) == scan_review(moderate.probabilities, thresholds)
    assert moderate.uncertainty >= REVIEW_BITS and moderate.needs_review
    calm = verdict(low | {"contrast_moderate": 0.99}, thresholds)
    assert calm.uncertainty < 0.3 and not calm.needs_review  # p 0.99: 0.24 bit
    # an ensemble's spread is recorded, the flag reads the mean probability
    spread = verdict(low, thresholds, stds={d: 0.2 for d in DETECTORS})
    assert spread.probability_std["noise_moderate"] == 0.2 and not spread.needs_review


def test_record_fields():
    probs = {d: 0.1 for d in DETECTORS}
    single = verdict(probs, {d: 0.5 for d in DETECTORS}).record_fields()
    assert list(single) == ["probabilities", "uncertainty", "needs_review", "grades", "tier",
                            "measured_noise_grade"]
    ensemble = verdict(probs, {d: 0.5 for d in DETECTORS}, stds={d: 0.0 for d in DETECTORS})
    assert "probability_std" in ensemble.record_fields()


@pytest.mark.parametrize(("snr", "detector_grade", "expected"), [
    (None, 0, 0), (float("nan"), 1, 1), (80.0, 0, 0), (80.0, 2, 2),  # the detectors alone
    (40.0, 0, 1), (20.0, 0, 2), (20.0, 1, 2), (40.0, 2, 2),  # the larger of the two
])
def test_measured_wm_snr_raises_the_noise_grade_never_lowers_it(snr, detector_grade, expected):
    thresholds = {d: 0.5 for d in DETECTORS}
    probs = {d: 0.1 for d in DETECTORS}
    if detector_grade >= 1:
        probs["noise_moderate"] = 0.9
    if detector_grade == 2:
        probs["noise_severe"] = 0.9
    v = verdict(probs, thresholds, wm_snr=snr)
    assert v.grades["noise"] == expected
    assert v.grades["motion"] == v.grades["contrast"] == 0
    assert v.tier == {0: 1, 1: 2, 2: 3}[expected]
    assert v.measured_noise_grade == (None if snr is None or snr != snr else
                                      0 if snr >= 52 else 1 if snr >= 27.5 else 2)


def test_assess_volume_is_what_rescoring_writes(tmp_path):
    """The group fine-tuning's re-scoring and assess_volume give the same verdict (one path),
    at the bundle's thresholds from its manifest, and an ensemble reports its spread."""
    single = load_bundle(make_untrained_bundle(tmp_path / "m", grid=SMALL, seed=3))
    volume = np.random.default_rng(0).random(SMALL.shape, dtype=np.float32)
    v = assess_volume(single, volume)
    assert v.probability_std is None
    thresholds = {d: round(0.2 + 0.1 * i, 2) for i, d in enumerate(DETECTORS)}
    detectors = {d: {"threshold": thresholds[d]} for d in DETECTORS}
    folder = save_bundle(tmp_path / "ens", [single.members[0], single.members[0]], model_id="ens",
                         trained=False, grid=SMALL, detectors=detectors)
    ensemble = load_bundle(folder)
    assert ensemble.thresholds == thresholds
    ve = assess_volume(ensemble, torch.from_numpy(volume))
    assert ve.thresholds == thresholds and ve.probability_std is not None
    assert ve.positives == {d: ve.probabilities[d] >= thresholds[d] for d in DETECTORS}
    table = pd.DataFrame({"bids_name": ["a", "b"]})
    columns = rescore(table, {"a": volume}, ensemble)
    assert list(table.columns) == ["bids_name"], "rescore returns columns, it does not write"
    table = table.join(columns)
    row = table.iloc[0]
    assert [row[f"p_{d}_ft"] for d in DETECTORS] == [ve.probabilities[d] for d in DETECTORS]
    assert [row[f"grade_{a}_ft"] for a in ARTEFACTS] == [ve.grades[a] for a in ARTEFACTS]
    assert (row["tier_ft"], row["uncertainty"]) == (ve.tier, ve.uncertainty)
    # the review flag is the rating queue's (bids_qc.review_priority): the one scored scan
    # ranks first and is flagged when its uncertainty reaches REVIEW_BITS, as at participant level
    from bids_qc.review_priority import REVIEW_BITS

    assert row["review_rank"] == 1 and "review_bits" not in table
    assert row["needs_review"] == (row["uncertainty"] >= REVIEW_BITS) == ve.needs_review
    assert pd.isna(table.iloc[1]["tier_ft"]) and pd.isna(table.iloc[1]["needs_review"])


def test_slab_verdict_fuses_into_the_motion_grade():
    """The slab detector corroborates motion: its 'motion' lifts the grade to at least 1, its
    'still' drops a moderate 3D call but not a severe one; not scored (None) changes nothing."""
    from bids_qc.verdict import slab_fused_motion

    assert [slab_fused_motion(g, None) for g in (0, 1, 2)] == [0, 1, 2]
    assert [slab_fused_motion(g, True) for g in (0, 1, 2)] == [1, 1, 2]
    assert [slab_fused_motion(g, False) for g in (0, 1, 2)] == [0, 0, 2]
    probs = {d: 0.0 for d in DETECTORS} | {"motion_moderate": 0.9}
    thresholds = {d: 0.5 for d in DETECTORS}
    assert verdict(probs, thresholds).grades["motion"] == 1
    assert verdict(probs, thresholds, slab_motion=False).tier == 1
    assert verdict({d: 0.0 for d in DETECTORS}, thresholds, slab_motion=True).tier == 2
