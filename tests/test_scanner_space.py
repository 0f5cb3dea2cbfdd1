"""Scanner-space artefacts: grades measured as defined, and the training shortcut (the clean
scan's registration reused) close to what the app itself computes on the same file."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_qc import scanner_space as ss
from bids_qc.evaluation.independent_artefacts import corrupt
from bids_qc.preprocessing import preprocess
from bids_qc.training.scanner_data import make_image

SCAN = (Path(__file__).resolve().parent.parent / "examples" / "ixi_mini" / "sub-IXI012" / "anat"
        / "sub-IXI012_T1w.nii.gz")


@pytest.fixture(scope="module")
def scan():
    if not SCAN.is_file():
        pytest.skip(f"{SCAN} missing")
    img = nib.load(str(SCAN))
    pre = preprocess(SCAN, with_registered=False)
    return ss.NativeScan(np.asarray(img.dataobj, np.float32), img.affine,
                         pre.record["registration"]["template_to_subject_ras"], "IXI012", "ixi-hh")


@pytest.mark.parametrize("grade", [1, 2])
def test_noise_reaches_the_snr_band_of_its_grade(scan, grade):
    rng = np.random.default_rng(grade)
    wm, gm = ss.tissue_masks(scan.data.shape, scan.affine, scan.template_to_subject)
    applied = ss.sample_artefacts({"motion": 0, "noise": grade, "contrast": 0}, rng)
    noisy, evidence = ss.apply_artefacts(scan.data, scan.affine, applied, wm, gm)
    low, high = ss.NOISE_SNR_TARGETS[grade]
    assert low - 0.5 <= evidence["snr"] <= high + 0.5
    assert ss.measured_grades(applied, evidence)["noise"] == grade
    # measured again on the result, independently of the formula: the air got noisier
    assert ss.air_sigma(noisy, ss.voxel_sizes(scan.affine)) > 1.2 * ss.air_sigma(scan.data, ss.voxel_sizes(scan.affine))


@pytest.mark.parametrize("grade", [0, 1, 2])
def test_the_app_measures_the_snr_that_defines_the_noise_grade(scan, grade, tmp_path):
    """The app re-measures, on the written file (its own registration, its own masks), the SNR
    the simulator recorded as the label's evidence: within 20 % (the simulator's figure is a
    formula, hypot(own sigma, added sigma); on IXI's partly zero-filled air the own sigma is
    overestimated, so the measured SNR of a noisy image reads up to ~17 % higher)."""
    from bids_qc.wm_snr import noise_grade

    rng = np.random.default_rng(20 + grade)
    wm, gm = ss.tissue_masks(scan.data.shape, scan.affine, scan.template_to_subject)
    applied = ss.sample_artefacts({"motion": 0, "noise": grade, "contrast": 0}, rng)
    noisy, evidence = ss.apply_artefacts(scan.data, scan.affine, applied, wm, gm)
    path = tmp_path / "noisy.nii.gz"
    nib.save(nib.Nifti1Image(noisy, scan.affine), path)
    measured = preprocess(path, with_registered=False).record["wm_snr"]
    assert measured["note"] is None
    assert measured["value"] == pytest.approx(evidence["snr"], rel=0.2)
    if grade == 2:
        assert noise_grade(measured["value"]) == 2


@pytest.mark.parametrize("grade", [1, 2])
def test_contrast_grade_is_the_nd_wgm_drop(scan, grade):
    rng = np.random.default_rng(10 + grade)
    wm, gm = ss.tissue_masks(scan.data.shape, scan.affine, scan.template_to_subject)
    applied = ss.sample_artefacts({"motion": 0, "noise": 0, "contrast": grade}, rng)
    _, evidence = ss.apply_artefacts(scan.data, scan.affine, applied, wm, gm)
    gamma = np.exp(applied[0]["log_gamma"])
    assert evidence["contrast_drop"] == pytest.approx(1 - gamma, abs=0.05)  # ~1 - gamma, any scanner
    assert ss.measured_grades(applied, evidence)["contrast"] == grade


def test_motion_grade_is_the_damage_the_image_shows(scan):
    """Motion is graded by the damage recorded with the moved image (relative difference from the
    image before the move), not by the amplitude class asked for: the recorded damage is
    re-measured from the two images, and the same evidence gives the same grade whichever class
    was asked."""
    wm, gm = ss.tissue_masks(scan.data.shape, scan.affine, scan.template_to_subject)
    applied = ss.sample_artefacts({"motion": 2, "noise": 0, "contrast": 0}, np.random.default_rng(5))
    moved, evidence = ss.apply_artefacts(scan.data, scan.affine, applied, wm, gm)
    damage = np.linalg.norm(moved - scan.data) / np.linalg.norm(scan.data)
    assert evidence["motion_damage"] == pytest.approx(damage, rel=1e-4)
    assert evidence["motion_damage"] > 0.02
    expected = 2 if damage >= ss.MOTION_DAMAGE_SEVERE else 1
    assert ss.measured_grades(applied, evidence)["motion"] == expected
    as_moderate = [{**applied[0], "grade": 1}]
    for value, grade in ((ss.MOTION_DAMAGE_SEVERE + 0.01, 2), (ss.MOTION_DAMAGE_SEVERE - 0.01, 1)):
        assert ss.measured_grades(as_moderate, {**evidence, "motion_damage": value})["motion"] == grade
        assert ss.measured_grades(applied, {**evidence, "motion_damage": value})["motion"] == grade
    with pytest.raises(ValueError, match="motion_damage"):
        ss.measured_grades(applied, {"snr": evidence["snr"]})
    assert ss.measured_grades([], {"snr": evidence["snr"]})["motion"] == 0


def test_training_shortcut_matches_the_app_on_the_same_image(scan, tmp_path):
    """make_image reuses the clean registration; the app registers the corrupted file again.
    Tolerance: the two model inputs correlate > 0.97 and differ by < 0.05 on average."""
    import SimpleITK as sitk

    from bids_qc.preprocessing import ModelGrid

    rng = np.random.default_rng(3)
    grades = {"motion": 1, "noise": 1, "contrast": 0}
    state = rng.bit_generator.state
    box, measured, record = make_image(scan, grades, rng, site=False)
    assert measured == grades and record["site_variation"] is None
    rng.bit_generator.state = state  # the same draws again, kept as a file this time
    wm, gm = ss.tissue_masks(scan.data.shape, scan.affine, scan.template_to_subject)
    data, _ = ss.apply_artefacts(scan.data, scan.affine, ss.sample_artefacts(grades, rng), wm, gm)
    path = tmp_path / "corrupted.nii.gz"
    nib.save(nib.Nifti1Image(data, scan.affine), path)
    app = preprocess(path, with_registered=False).model_input
    ours = ModelGrid().normalise(box.astype(np.float32))
    assert np.corrcoef(app.ravel(), ours.ravel())[0, 1] > 0.97
    assert np.abs(app - ours).mean() < 0.05
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)


def test_site_variation_keeps_the_head_in_place(scan):
    rng = np.random.default_rng(5)
    params = ss.sample_site(rng, ss.voxel_sizes(scan.affine))
    data, affine = ss.apply_site(scan.data, scan.affine, params)
    np.testing.assert_allclose(ss.voxel_sizes(affine), params["spacing_mm"], rtol=1e-6)
    centre = lambda d, a: (a @ np.r_[np.array(np.nonzero(d > np.percentile(d, 80))).mean(1), 1])[:3]  # noqa: E731
    assert np.linalg.norm(centre(data, affine) - centre(scan.data, scan.affine)) < 6.0  # mm


def test_independent_simulator_grades_by_the_same_definitions(scan):
    rng = np.random.default_rng(8)
    data, measured, info = corrupt(scan, {"motion": 2, "noise": 2, "contrast": 1}, rng)
    assert data.shape == scan.data.shape and np.isfinite(data).all()
    damage = info["evidence"]["motion_damage"]
    assert measured["motion"] == (2 if damage >= ss.MOTION_DAMAGE_SEVERE else 1) and measured["noise"] == 2
    assert measured["contrast"] in (1, 2) and info["evidence"]["contrast_drop"] > ss.CONTRAST_DROP_LIMITS[0]


@pytest.mark.slow
def test_prepared_scans_keep_their_own_grid_when_asked(tmp_path):
    """prepare_scans re-samples voxels finer than ``finest_mm`` (the 3D benchmark's memory) and
    keeps the scan's own grid with 0 (what the app reads); a file made with another setting is
    made again, not reused."""
    from scipy import ndimage

    from bids_qc.training.scanner_data import load_scan_npz, prepare_scans

    if not SCAN.is_file():
        pytest.skip(f"{SCAN} missing")
    img = nib.load(str(SCAN))
    fine = ndimage.zoom(np.asarray(img.dataobj, np.float32), 2.5, order=1)  # 2 mm -> 0.8 mm
    path = tmp_path / "sub-fine_T1w.nii.gz"
    nib.save(nib.Nifti1Image(fine, img.affine @ np.diag([0.4, 0.4, 0.4, 1])), str(path))
    sources = [("fine", "site", path)]
    (coarse,) = prepare_scans(sources, tmp_path / "scans", nprocs=1, finest_mm=1.0)
    assert np.allclose(ss.voxel_sizes(load_scan_npz(coarse).affine), 1.0)
    (native,) = prepare_scans(sources, tmp_path / "scans", nprocs=1, finest_mm=0.0)
    assert native == coarse
    assert np.allclose(ss.voxel_sizes(load_scan_npz(native).affine), 0.8)
    assert load_scan_npz(native).data.shape == fine.shape


def _spliced(still, moved, lines):
    """k-space of ``still`` with the phase-encoding lines ``lines`` (axis 0) taken from ``moved``."""
    k = np.fft.fftshift(np.fft.fftn(still))
    k[lines] = np.fft.fftshift(np.fft.fftn(moved))[lines]
    return np.abs(np.fft.ifftn(np.fft.ifftshift(k))).astype(np.float32)


def test_motion_damage_is_what_the_move_left_not_its_amplitude():
    """The same 6 mm move damages an image more when its lines cover the k-space centre than when
    they are the outer lines; an image equal to one still position has no damage."""
    from bids_qc.evaluation.independent_artefacts import move
    from bids_qc.scanner_space import motion_damage

    z, y, x = np.mgrid[:40, :48, :40]
    head = (((z - 20) / 14) ** 2 + ((y - 24) / 18) ** 2 + ((x - 20) / 14) ** 2 < 1) * 100.0
    head += (((z - 20) / 6) ** 2 + ((y - 20) / 8) ** 2 + ((x - 22) / 5) ** 2 < 1) * 60.0
    moved = move(head, (1.0, 1.0, 1.0), (6.0, 0.0, 0.0), (0.0, 6.0, 0.0))
    still = [head.astype(np.float32), moved.astype(np.float32)]
    outer = _spliced(head, moved, slice(0, 6))
    centre = _spliced(head, moved, slice(17, 23))
    assert motion_damage(still[1], still) == 0.0
    assert 0 < motion_damage(outer, still) < motion_damage(centre, still)
    assert motion_damage(centre, still) > 2 * motion_damage(outer, still)


@pytest.mark.parametrize("grade", [1, 2])
def test_independent_motion_moves_every_axis_within_the_published_range(grade):
    """The published ranges are per axis (TorchIO's RandomMotion): every rotation and translation
    of every moved position lies in the grade's range, not only the largest of them."""
    from bids_qc.evaluation.independent_artefacts import MOTION_MM, motion

    head = np.zeros((24, 28, 24), np.float32)
    head[6:18, 6:22, 6:18] = 100.0
    low, high = MOTION_MM[grade]
    for seed in range(4):
        _, info = motion(head, (2.0, 2.0, 2.0), grade, np.random.default_rng(seed))
        moved = np.abs(np.array(info["positions"][1:]))
        assert moved.size and ((moved >= low - 1e-3) & (moved <= high + 1e-3)).all()
        assert not np.any(info["positions"][0])
