"""Slab motion detector: slicing geometry, motion simulation, model folders, training, scoring."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, synthetic_head

from bids_qc.exceptions import ModelError
from bids_qc.slab_detector import slices
from bids_qc.slab_detector.detector import load_detector, save_detector, score_stack
from bids_qc.slab_detector.network import SlabNet
from bids_qc.training.slab.simulation import apply_motion, sample_motion

PAIRS = DATA / "motion_pairs"
ROOT = Path(__file__).resolve().parents[1]


def _marked_volume():
    """A 3 mm RAS head with a bright cube in the right-anterior-superior octant."""
    img = synthetic_head((60, 64, 56), zoom=3.0)
    data = np.asarray(img.dataobj, np.float32)
    data[40:46, 44:50, 38:44] = 3000.0
    return data, img.affine


def test_stack_is_ras_2mm_whatever_the_voxel_order():
    data, affine = _marked_volume()
    reference = slices.to_ras_stack(data, affine)
    # the same head stored P-S-R (IXI's voxel order): axes permuted, affine permuted to match
    psr = np.ascontiguousarray(np.transpose(data, (1, 2, 0))[::-1])
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 0] = perm[2, 1] = perm[3, 3] = 1
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, psr.shape[0] - 1
    other = slices.to_ras_stack(psr, affine @ perm @ flip)
    assert reference.shape == other.shape == (90, 128, 128)
    np.testing.assert_allclose(reference, other, atol=1e-3)
    peak = np.unravel_index(np.argmax(reference), reference.shape)
    assert peak[0] > 45 and peak[1] > 64 and peak[2] > 64  # right, anterior, superior


def test_a_1mm_slab_gives_2mm_slices_and_triplets():
    rng = np.random.default_rng(0)
    slab = np.zeros((20, 256, 256), np.float32)
    slab[:, 40:220, 30:230] = 100 + rng.normal(0, 5, (20, 180, 200))
    stack = slices.to_ras_stack(slab, np.eye(4))
    assert stack.shape == (10, 128, 128)
    centres = slices.triplet_centres(stack)
    assert list(centres) == list(range(1, 9))
    x = slices.triplets(stack, centres)
    assert x.shape == (8, 3, 128, 128) and 0.9 < np.percentile(x[x > 0], 99) < 1.1


def test_empty_stack_has_no_triplet_and_no_score():
    stack = np.zeros((10, 128, 128), np.float32)
    assert len(slices.triplet_centres(stack)) == 0
    assert score_stack(SlabNet().eval(), stack) is None


def test_float16_cache_keeps_the_score_of_scans_in_large_units():
    """A Philips scan stored up to ~159 000 overflowed float16 (inf) and lost its score."""
    data, affine = _marked_volume()
    stack = slices.to_ras_stack(data, affine) * (160_000 / data.max())
    assert stack.max() > np.finfo(np.float16).max
    compact = slices.to_float16(stack)
    assert compact.dtype == np.float16 and np.isfinite(compact).all()
    net = SlabNet().eval()
    assert score_stack(net, compact.astype(np.float32)) == pytest.approx(score_stack(net, stack), abs=1e-3)


def test_motion_simulation_moves_the_image_and_is_reproducible():
    data, affine = _marked_volume()
    still = sample_motion(np.random.default_rng(1), amplitude=0.0)
    assert np.abs(apply_motion(data, affine, still) - data).max() < 1e-2 * data.max()
    for axis in range(3):
        params = sample_motion(np.random.default_rng(2), amplitude=3.0)
        params["kspace_axis"] = axis
        moved = apply_motion(data, affine, params)
        assert moved.shape == data.shape
        assert np.abs(moved - data).mean() > 1.0
        np.testing.assert_array_equal(moved, apply_motion(data, affine, params))
    json.dumps(params)  # recordable


def test_wider_psf_smooths_along_its_axes_only_and_keeps_the_mean():
    from bids_qc.training.slab.psf import apply_psf, sample_psf

    data, _ = _marked_volume()
    smooth = apply_psf(data, {"factors": [2.0, 1.0, 1.0]})
    assert smooth.shape == data.shape and smooth.dtype == np.float32
    np.testing.assert_allclose(smooth.mean(), data.mean(), rtol=0.02)  # |ringing| adds a little

    def fine_detail(volume, axis):  # energy above half the Nyquist frequency along ``axis``
        spectrum = np.abs(np.fft.fft(volume - volume.mean(), axis=axis)) ** 2
        high = np.abs(np.fft.fftfreq(volume.shape[axis])) > 0.25
        return np.moveaxis(spectrum, axis, 0)[high].sum()

    assert fine_detail(smooth, 0) < 0.05 * fine_detail(data, 0)  # gone along x
    assert fine_detail(smooth, 1) > 0.5 * fine_detail(data, 1)  # kept along y
    params = sample_psf(np.random.default_rng(0))
    assert all(1.0 <= f <= 2.25 for f in params["factors"])
    json.dumps(params)


def test_psf_pairs_share_the_smoothing_and_leave_other_draws_alone():
    from bids_qc.training.slab.cache import make_pair

    data, affine = _marked_volume()
    plain = make_pair(data, affine, np.random.default_rng(5), p_site=0.0)
    again = make_pair(data, affine, np.random.default_rng(5), p_site=0.0, p_psf=0.0)
    assert plain[2] == again[2]  # asking for no PSF draws nothing more
    np.testing.assert_array_equal(plain[0], again[0])
    still, moved, record = make_pair(data, affine, np.random.default_rng(5), p_site=0.0, p_psf=1.0)
    assert record["psf"] is not None and record["site"] is None
    sharp = np.abs(np.diff(plain[0].astype(float), axis=1)).mean()
    assert np.abs(np.diff(still.astype(float), axis=1)).mean() < sharp  # the still twin is smooth too
    assert np.abs(still.astype(float) - moved.astype(float)).mean() > 0.5


def test_denoising_smooths_flat_tissue_and_keeps_edges():
    """Both vendor-like filters take most of the noise out of a flat region and keep a step edge's
    height; the blend weight sits between; an unknown filter is an error that names it."""
    from bids_qc.training.slab.denoise import apply_denoise, sample_denoise

    volume = np.random.default_rng(1).normal(100, 10, (24, 24, 24)).astype(np.float32)
    volume[:, :, 12:] += 100.0
    for params in ({"filter": "median", "weight": 1.0},
                   {"filter": "diffusion", "weight": 1.0, "conductance": 1.0, "iterations": 5}):
        out = apply_denoise(volume, params)
        assert out.shape == volume.shape and out.dtype == np.float32
        assert out[:, :, 1:10].std() < 0.6 * volume[:, :, 1:10].std()
        step = out[:, :, 14:].mean() - out[:, :, :10].mean()
        assert step == pytest.approx(100.0, abs=3.0)
    half = apply_denoise(volume, {"filter": "median", "weight": 0.5})
    full = apply_denoise(volume, {"filter": "median", "weight": 1.0})
    assert full[:, :, 1:10].std() < half[:, :, 1:10].std() < volume[:, :, 1:10].std()
    with pytest.raises(ValueError, match="wiener"):
        apply_denoise(volume, {"filter": "wiener", "weight": 1.0})
    rng = np.random.default_rng(0)
    draws = [sample_denoise(rng) for _ in range(40)]
    assert {d["filter"] for d in draws} == {"median", "diffusion"}
    assert all(0.5 <= d["weight"] <= 1.0 for d in draws)
    json.dumps(draws)


def test_denoised_pairs_filter_both_twins_after_the_motion():
    from bids_qc.training.slab.cache import make_pair

    data, affine = _marked_volume()
    data = data + np.random.default_rng(2).normal(0, 30, data.shape).astype(np.float32) * (data > 0)
    plain = make_pair(data, affine, np.random.default_rng(5), p_site=0.0, p_psf=0.0)
    again = make_pair(data, affine, np.random.default_rng(5), p_site=0.0, p_psf=0.0, p_denoise=0.0)
    assert plain[2] == again[2] and plain[2]["denoise"] is None  # no denoising draws nothing
    still, moved, record = make_pair(data, affine, np.random.default_rng(5), p_site=0.0, p_psf=0.0,
                                     p_denoise=1.0)
    assert record["denoise"]["filter"] in ("median", "diffusion")
    assert record["motion"] == plain[2]["motion"]  # the same motion, drawn before the filter

    def roughness(stack):
        return np.abs(np.diff(stack.astype(float), axis=1)).mean()

    assert roughness(still) < roughness(plain[0]) and roughness(moved) < roughness(plain[1])
    assert np.abs(still.astype(float) - moved.astype(float)).mean() > 0.5  # the motion stays


def test_model_folder_round_trip_and_corruption(tmp_path):
    torch.manual_seed(0)
    net = SlabNet().eval()
    folder = save_detector(tmp_path / "m", net, model_id="slab-test", threshold=0.4, extra={"seed": 0})
    detector = load_detector(folder)
    assert detector.model_id == "slab-test" and detector.threshold == 0.4
    data, affine = _marked_volume()
    out = detector.assess(data, affine @ np.diag([2 / 3, 2 / 3, 2 / 3, 1]))  # 2 mm: a verdict
    assert 0.0 <= out["score"] <= 1.0 and out["n_triplets"] > 10
    assert out["motion"] == (out["score"] >= 0.4)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_detector(folder)
    with pytest.raises(ModelError, match="manifest.json"):
        load_detector(tmp_path / "nowhere")


def test_input_blur_is_part_of_the_model_folder(tmp_path):
    """A network that blurs its input keeps doing so after save/load (the manifest says how much),
    a flat image stays flat, and an edge is softened."""
    torch.manual_seed(0)
    net = SlabNet(input_blur_mm=1.5).eval()
    flat = torch.full((1, 3, 32, 32), 0.7)
    torch.testing.assert_close(net._blur(flat), flat)
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 1.0
    blurred = net._blur(edge)
    assert 0.0 < blurred[0, 0, 5, 15] < 0.5 < blurred[0, 0, 5, 16] < 1.0
    folder = save_detector(tmp_path / "b", net, model_id="blur", threshold=0.5, extra={})
    detector = load_detector(folder)
    assert detector.manifest["input"]["blur_mm"] == 1.5 and detector.net.input_blur_mm == 1.5
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(detector.net(x), net(x), atol=2e-2, rtol=1e-2)  # float16 weights
    assert load_detector(save_detector(tmp_path / "p", SlabNet().eval(), model_id="p", threshold=0.5,
                                       extra={})).net.input_blur_mm == 0.0


def test_instance_norm_divides_out_a_scanners_overall_contrast(tmp_path):
    """SlabNet(norm="instance") computes the same features for a triplet and for it with its
    contrast scaled (a scanner's overall level), where BatchNorm's running statistics do not; the
    choice is kept through save/load (manifest ``network.norm``), and an unknown one is refused."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128)
    inst = SlabNet(norm="instance").eval()
    with torch.no_grad():
        scaled, plain = inst.features(0.4 * x), inst.features(x)
        assert (scaled - plain).abs().max() < 0.01 * plain.abs().max()  # eps of the norm aside
        batch = SlabNet().eval()
        scaled, plain = batch.features(0.4 * x), batch.features(x)
        assert (scaled - plain).abs().max() > 0.1 * plain.abs().max()
    detector = load_detector(save_detector(tmp_path / "i", inst, model_id="i", threshold=0.5, extra={}))
    assert detector.manifest["network"]["norm"] == "instance" and detector.net.norm == "instance"
    torch.testing.assert_close(detector.net(x), inst(x), atol=2e-2, rtol=1e-2)  # float16 weights
    with pytest.raises(ValueError, match="norm must be one of"):
        SlabNet(norm="layer")


def test_slab_card_says_when_sharpness_was_varied():
    from bids_qc.resources import model_dir
    from bids_qc.training.slab.model_card import render_card

    folder = model_dir("slab-motion-ixi-v1")
    manifest = json.loads((folder / "manifest.json").read_text())
    bench = json.loads((folder / "heldout_benchmark.json").read_text())
    assert "Sharpness varied" not in render_card(manifest, bench)
    manifest["simulation"]["psf_fraction"] = 0.5
    assert "- Sharpness varied: in 50% of each scan's pairs" in render_card(manifest, bench)
    assert "Vendor filtering varied" not in render_card(manifest, bench)
    manifest["simulation"]["denoise_fraction"] = 0.5
    assert "- Vendor filtering varied: in 50% of each scan's pairs" in render_card(manifest, bench)
    manifest["simulation"]["air_floor_fraction"] = 0.5
    assert "- Air varied: in 50% of the training pairs" in render_card(manifest, bench)
    assert "Other scanners" not in render_card(manifest, bench)
    manifest["training"]["extra_training_scans"] = ["/data/sub-utah_T1w.nii.gz"]
    manifest["simulation"].update(extra_variants=36, extra_share=0.25, contrast_fraction=0.5)
    card = render_card(manifest, bench)
    assert "`sub-utah_T1w.nii.gz`, 36 still/moved pairs each, drawn for 25% of the training pairs" in card
    assert "- T1 contrast varied: 50% of training triplets" in card
    assert "Instance normalisation" not in card
    manifest["network"] = {"norm": "instance"}
    assert "- Instance normalisation in every block" in render_card(manifest, bench)


def test_tone_curve_is_monotone_and_keeps_black_and_the_bright_level():
    from bids_qc.training.slab.augment import augment, tone_curve

    ramp = torch.linspace(0, 1.5, 301).view(1, 1, 1, -1).repeat(8, 3, 1, 1)
    curved = tone_curve(ramp, np.random.default_rng(0))
    assert (curved.diff(dim=-1) >= 0).all()  # order of intensities kept
    at = {v: int(round(v / 0.005)) for v in (0.0, 1.0)}
    assert torch.allclose(curved[..., at[0.0]], torch.zeros(1)) and torch.allclose(curved[..., at[1.0]], torch.ones(1))
    assert (curved - ramp).abs().amax(dim=(1, 2, 3)).min() > 0.01  # every image's curve bends
    assert not torch.allclose(curved[0], curved[1])  # one curve per image
    plain = augment(ramp.clone(), np.random.default_rng(3))
    assert torch.equal(plain, augment(ramp.clone(), np.random.default_rng(3), contrast_fraction=0.0))
    assert not torch.equal(plain, augment(ramp.clone(), np.random.default_rng(3), contrast_fraction=1.0))


def test_extra_scans_get_their_share_of_pairs():
    from bids_qc.training.slab.train import subject_weights

    assert subject_weights(10, 0, 0.25) is None and subject_weights(10, 3, 0.0) is None
    w = subject_weights(10, 2, 0.25)
    assert w.shape == (12,) and np.isclose(w.sum(), 1) and np.isclose(w[10:].sum(), 0.25)
    drawn = np.random.default_rng(0).choice(12, size=4000, p=w)
    assert abs((drawn >= 10).mean() - 0.25) < 0.03


def test_training_runs_and_learns_something(tmp_path):
    """Two synthetic subjects, a few batches: the loop, validation and threshold work end to end."""
    from bids_qc.training.slab.cache import _to_uint8
    from bids_qc.training.slab.train import Stacks, sensitivity_threshold, train

    stacks = []
    for seed in range(2):
        data, affine = _marked_volume()
        clean = slices.to_ras_stack(data, affine)
        moved = [slices.to_ras_stack(apply_motion(data, affine, sample_motion(
            np.random.default_rng(seed * 10 + k), amplitude=a)), affine) for k, a in enumerate((1.0, 3.0))]
        scale = 200 / np.percentile(clean[clean > 0], 99.5)
        stacks.append(Stacks(f"s{seed}", [_to_uint8(clean[30:60], scale)] * 2,
                             [_to_uint8(m[30:60], scale) for m in moved],
                             np.array([1.0, 3.0], np.float32)))
    net, history, val = train(stacks[:1], stacks[1:], epochs=2, batches=3, batch_size=4,
                              progress=lambda *_: None)
    assert len(history) == 2 and np.isfinite(history[-1]["loss"])
    assert len(val["scores"]) == 4  # two still/moved validation pairs
    assert min(val["scores"]) <= sensitivity_threshold(val["scores"], val["amplitudes"]) <= max(val["scores"])
    # other scanners' scans join the draws, with tone curves: still one network, validated as before
    _, history, val = train(stacks[:1], stacks[1:], epochs=1, batches=2, batch_size=4,
                            extra_set=stacks[1:], extra_share=0.5, contrast_fraction=0.5,
                            progress=lambda *_: None)
    assert len(history) == 1 and len(val["scores"]) == 4


def test_only_sagittal_slabs_are_scored(tmp_path):
    detector = load_detector(save_detector(tmp_path / "m", SlabNet().eval(), model_id="t",
                                           threshold=0.5, extra={}))
    rng = np.random.default_rng(0)
    block = 100 + rng.normal(0, 5, (20, 200, 180)).astype(np.float32)
    sagittal = detector.assess(block, np.eye(4))  # 20 mm left-right
    assert sagittal["score"] is not None and sagittal["note"] is None
    axial = detector.assess(np.ascontiguousarray(block.transpose(1, 2, 0)), np.eye(4))  # 20 mm S-I
    assert axial["score"] is None and axial["motion"] is None
    assert "axial slab (20 mm thick)" in axial["note"]


def test_thick_slices_get_a_score_but_no_verdict(tmp_path):
    detector = load_detector(save_detector(tmp_path / "m", SlabNet().eval(), model_id="t",
                                           threshold=0.5, extra={}))
    data, affine = _marked_volume()  # 3 mm voxels
    fine = detector.assess(data, affine @ np.diag([2 / 3, 2 / 3, 2 / 3, 1]))  # read as 2 mm
    assert fine["motion"] is not None and fine["note"] is None
    thick = affine @ np.diag([2 / 3, 2 / 3, 1.6, 1])  # a 2D acquisition: 4.8 mm axial slices
    coarse = detector.assess(data[:, :, ::2], thick)
    assert coarse["score"] is not None and coarse["motion"] is None
    assert "no verdict: 4.8 mm voxels" in coarse["note"]


def test_site_threshold_from_ratings():
    """A site whose still scans score above the shipped threshold: the site's own threshold
    separates its ratings, out of fold, where the shipped one calls everything motion."""
    import pandas as pd

    from bids_qc.training.slab.site_threshold import apply_site_threshold, site_threshold

    rng = np.random.default_rng(0)
    still, moving = rng.uniform(0.1, 0.3, 10), rng.uniform(0.4, 0.7, 10)
    names = [f"sub-{i:02d}_T1w" for i in range(20)]
    table = pd.DataFrame({"bids_name": names + ["sub-99_T1w"], "subject": [f"{i:02d}" for i in range(21)],
                          "slab_motion_score": list(still) + list(moving) + [None]})
    ratings = pd.DataFrame({"bids_name": names, "motion": [0] * 10 + [1] * 5 + [2] * 5})
    result = apply_site_threshold(table, ratings, shipped=0.063)
    assert result["adopted"] and result["status"].startswith("adopted the site threshold")
    assert 0.3 <= result["threshold"] <= 0.4 and result["threshold"] == result["site_threshold"]
    assert result["balanced_accuracy"]["shipped_threshold"] == 0.5
    assert result["balanced_accuracy"]["site_threshold_cross_validated"] == 1.0
    assert table["slab_motion_site"].tolist()[:20] == [False] * 10 + [True] * 10
    assert pd.isna(table["slab_motion_site"].iloc[20])
    kept = site_threshold([0.1, 0.2, 0.9], [0, 0, 1], ["a", "b", "c"], shipped=0.063)
    assert "kept the shipped threshold" in kept["status"] and not kept["adopted"]
    assert kept["threshold"] == 0.063 and "site_threshold" not in kept


def test_site_threshold_worse_in_cross_validation_is_not_adopted():
    """Scores that do not rank motion above still: the shipped threshold (BA 0.5 here) is
    kept because the site's candidate is no better out of fold; both figures are reported and
    the table gets no site column."""
    import pandas as pd

    from bids_qc.training.slab.site_threshold import apply_site_threshold

    names = [f"sub-{i:02d}_T1w" for i in range(16)]
    scores = np.linspace(0.0, 0.4, 16)  # still and motion interleaved: a Youden cut overfits
    table = pd.DataFrame({"bids_name": names, "subject": [f"{i:02d}" for i in range(16)],
                          "slab_motion_score": scores})
    ratings = pd.DataFrame({"bids_name": names, "motion": [0, 1] * 8})
    result = apply_site_threshold(table, ratings, shipped=0.5)
    ba = result["balanced_accuracy"]
    assert ba["shipped_threshold"] == 0.5 and ba["site_threshold_cross_validated"] <= 0.5
    assert not result["adopted"] and result["threshold"] == 0.5
    assert result["status"].startswith("kept the shipped threshold (the site threshold is not better")
    assert f"{ba['site_threshold_cross_validated']:.3f}" in result["status"] and "0.500" in result["status"]
    assert "site_threshold" in result and "slab_motion_site" not in table


# ----------------------------------------------------------------------------- shipped model

def test_shipped_slab_model_loads_and_is_documented():
    from bids_qc.config import DEFAULT_SLAB_MODEL_DIR

    detector = load_detector(DEFAULT_SLAB_MODEL_DIR)
    manifest = detector.manifest
    assert manifest["trained"] is True
    # a single network says how it was trained; an agreement, how it was combined and how each
    # member was trained
    commands = [m["command"] for m in manifest.get("members", [])] or [manifest["command"]]
    assert commands and all(c.startswith("bids-qc-train-slab ") for c in commands)
    if "members" in manifest:
        assert manifest["command"].startswith("python scripts/agree_slab_models.py ")
    assert 0.0 < detector.threshold < 1.0
    assert (DEFAULT_SLAB_MODEL_DIR / "MODEL_CARD.md").is_file()
    bench = json.loads((DEFAULT_SLAB_MODEL_DIR / "heldout_benchmark.json").read_text())
    assert bench["simulated"]["detector"]["all"] > 0.9


@pytest.mark.skipif(not PAIRS.is_dir(), reason=f"shared data not found at {PAIRS}")
def test_shipped_slab_model_judges_real_slabs():
    """Real 20-slice slabs: every scan gets a score; the moving scans score higher on average."""
    from bids_qc.config import DEFAULT_SLAB_MODEL_DIR
    from bids_qc.training.slab.evaluation import real_pairs

    result = real_pairs(load_detector(DEFAULT_SLAB_MODEL_DIR), PAIRS)
    assert all(r["detector"] is not None for r in result["rows"])
    moving = np.mean([r["detector"] for r in result["rows"] if r["motion"]])
    still = np.mean([r["detector"] for r in result["rows"] if not r["motion"]])
    assert moving > still


@pytest.mark.skipif(not PAIRS.is_dir(), reason=f"shared data not found at {PAIRS}")
def test_app_judges_real_slabs_end_to_end(tmp_path, caplog):
    """The BIDS-App on the 12 real slabs: every scan ok, no tier (the registered detectors cannot
    judge a slab, and the record says so), a slab motion score, and the group table has it; the
    log's summaries and group_summary.json count the slab verdicts of the scans without a tier."""
    import logging

    import pandas as pd

    from bids_qc.cli.run import main

    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert main([str(PAIRS), str(out), "participant", "--no-reports", "--skip-bids-validation"]) == 0
    records = [json.loads(p.read_text()) for p in out.glob("sub-*/anat/*_qc.json")]
    n_motion = sum(bool(r["slab_motion"]["motion"]) for r in records)
    assert f"no tier 12 (slab motion {n_motion}, no slab motion {12 - n_motion}, no verdict 0)" in caplog.text
    caplog.clear()
    assert main([str(PAIRS), str(out), "group", "--no-reports"]) == 0
    summary = json.loads((out / "group_summary.json").read_text())
    assert summary["slab_motion"]["without_tier"] == {"motion": n_motion, "no motion": 12 - n_motion,
                                                      "not scored": 0}
    assert f"of the scans without a tier {n_motion} flagged, {12 - n_motion} not" in caplog.text
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert len(table) == 12 and (table["status"] == "ok").all() and table["tier"].isna().all()
    assert table["slab_motion_score"].between(0, 1).all()
    moving = table["acquisition"] == "motion"
    assert table.loc[moving, "slab_motion_score"].mean() > table.loc[~moving, "slab_motion_score"].mean()
    record = json.loads(next(out.glob("sub-*/anat/*_qc.json")).read_text())
    assert any("partial coverage" in w for w in record["warnings"])
    assert record["slab_motion"]["n_triplets"] == 8
    # rated by their labels: the site threshold is adopted only if it beats the shipped one out
    # of fold, and the group outputs (summary, TSV, report) say which, with both figures
    labels = pd.read_csv(PAIRS / "labels.tsv", sep="\t")
    ratings = tmp_path / "ratings.tsv"
    ratings.write_text("bids_name\tmotion\tnoise\tcontrast\n" + "".join(
        f"{Path(r.path).name.removesuffix('.nii.gz')}\t{r.motion}\tn/a\tn/a\n" for r in labels.itertuples()))
    assert main([str(PAIRS), str(out), "group", "--annotations", str(ratings)]) == 0
    site = json.loads((out / "group_summary.json").read_text())["slab_motion_site"]
    ba = site["balanced_accuracy"]
    assert site["adopted"] == (ba["site_threshold_cross_validated"] > ba["shipped_threshold"])
    assert site["threshold"] == (site["site_threshold"] if site["adopted"] else site["shipped_threshold"])
    assert ("slab_motion_site" in pd.read_csv(out / "group_T1w.tsv", sep="\t")) == site["adopted"]
    report = (out / "group_report.html").read_text()
    assert ("Site threshold: adopted" if site["adopted"] else "Site threshold: kept the shipped") in report
    assert f"{ba['shipped_threshold']:.3f}" in report and f"{ba['site_threshold_cross_validated']:.3f}" in report
    assert re.search(r'id="n-slab-motion"[^>]*><div class="n">\d+</div>', report)


def test_confound_probe_changes_one_thing_at_a_time():
    """The probe: the unchanged condition is the app's own score, blur changes the stack, the
    Rician noise lands at the SNR asked for, and the head mask keeps the head and drops the air."""
    from bids_qc.training.slab import confounds

    rng = np.random.default_rng(0)
    head = np.full((40, 40, 40), 100.0, np.float32)
    noisy = confounds.rician(head, 25, rng)
    assert abs(noisy.std() - 4.0) < 0.2 and abs(noisy.mean() - 100.0) < 0.5

    img = synthetic_head(zoom=2.0)
    volume, affine = np.asarray(img.dataobj, np.float32), img.affine
    stack = slices.to_ras_stack(volume, affine)
    mask = confounds.head_mask(stack)
    head = stack > slices.FOREGROUND_FRACTION * np.percentile(stack, 99)
    assert mask[head].all() and head.sum() < mask.sum() < 0.5 * mask.size  # head kept, air dropped
    detector = load_detector()
    out = confounds.responses(detector, volume, affine)
    assert set(out) == {"clean", "blur_1mm", "blur_2mm", "snr_40", "snr_25", "air_zeroed", "air_floor",
                        "uint8", "slices_3mm", "median_3"}
    floored = confounds.air_floor(stack, 0.03, np.random.default_rng(1))
    np.testing.assert_array_equal(floored[mask], stack[mask])  # the head is untouched
    level = floored[~mask].mean() / np.percentile(stack[stack > 0], 99)
    assert level == pytest.approx(0.03, rel=0.15) and stack[~mask].mean() < floored[~mask].mean()
    assert out["median_3"]["score"] != pytest.approx(out["clean"]["score"], abs=1e-6)
    thick, thick_affine = confounds.thick_slices(volume, affine, 3.0)
    assert np.allclose(np.abs(np.diag(thick_affine))[:3], (2.0, 2.0, 3.0))  # axial slices only
    assert thick.shape[:2] == volume.shape[:2] and thick.shape[2] < volume.shape[2]
    assert out["clean"]["score"] == pytest.approx(detector.assess(volume, affine)["score"], abs=1e-6)
    assert out["blur_2mm"]["score"] != pytest.approx(out["clean"]["score"], abs=1e-6)
    table = confounds.format_table(detector.model_id, [{"scan": "x", "site": "s", "responses": out}])
    assert "| flagged |" in table and "blur_1mm" in table


def _bench_slab_sites():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_slab_sites", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_slab_sites.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_site_benchmark_applies_the_apps_verdict(tmp_path):
    """bench_slab_sites counts what the app would say: a 4.8 mm scan's images get no verdict
    (counted apart, out of the balanced accuracy), a 1 mm scan's images the threshold's."""
    bench = _bench_slab_sites()
    detector = load_detector(save_detector(tmp_path / "m", SlabNet().eval(), model_id="t",
                                           threshold=0.5, extra={}))
    rows = []
    for site, voxel in (("thick", [1.0, 1.0, 4.8]), ("fine", [1.0, 1.0, 1.0])):
        for i, (score, motion) in enumerate([(0.9, 1), (0.8, 0), (0.2, 0), (0.7, 1)]):
            rows.append({"site": site, "detector": score, "voxel_mm": voxel,
                         "grades": {"motion": motion}, "tenengrad": float(i), "snr_native": float(i)})
    table = bench.site_table(rows, detector)
    thick, fine = table["thick"]["shipped"], table["fine"]["shipped"]
    assert thick["no_verdict"] == 4 and thick["n_still"] == 0 and thick["still_flagged"] == 0
    assert fine["no_verdict"] == 0 and (fine["still_flagged"], fine["n_still"]) == (1, 2)
    assert (fine["moved_flagged"], fine["n_moved"]) == (2, 2)
    assert fine["balanced_accuracy"] == pytest.approx(0.75)
    assert table["thick"]["group"]["no_verdict"] == 4


def test_site_benchmark_reuses_a_cached_draw_only_for_the_same_scan_file(tmp_path, monkeypatch):
    """A cached image is read back (no simulation) for the same prepared file, seed and position;
    a prepared file made again (e.g. on another grid) is simulated again."""
    import os

    bench = _bench_slab_sites()
    img = synthetic_head(zoom=2.0)
    scan = tmp_path / "s.npz"
    np.savez(scan, data=np.asarray(img.dataobj, np.float32), affine=img.affine, matrix=np.eye(4),
             meta=json.dumps({"name": "s", "site": "x", "source": "s.nii.gz"}))
    cache = tmp_path / "cache"
    cache.mkdir()
    job = (str(scan), 0, 0, 2029, str(cache))
    first = bench._image(job)
    assert (cache / "s-000.npz").exists() and first["voxel_mm"] == [2.0, 2.0, 2.0]

    def no_simulation(*a, **k):
        raise AssertionError("simulated again")

    monkeypatch.setattr(bench, "draw_image", no_simulation)
    again = bench._image(job)
    assert np.array_equal(again["stack"], first["stack"])
    assert {k: v for k, v in again.items() if k != "stack"} == {k: v for k, v in first.items() if k != "stack"}
    st = scan.stat()
    os.utime(scan, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the prepared file was made again
    with pytest.raises(AssertionError, match="simulated again"):
        bench._image(job)


def test_agreeing_members_flag_only_when_all_do(tmp_path):
    """A two-member slab folder says motion exactly when both members say motion at their own
    thresholds, whatever the thresholds; its score ranks by the smaller member margin, and the
    members' networks survive save/load (instance and batch norm alike)."""
    from bids_qc.slab_detector.detector import save_agreeing_detector

    torch.manual_seed(0)
    data, affine = _marked_volume()
    affine = affine @ np.diag([2 / 3, 2 / 3, 2 / 3, 1])  # read as 2 mm: a verdict is given
    nets = [SlabNet().eval(), SlabNet(norm="instance").eval()]
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    scores = [load_detector(save_detector(tmp_path / f"s{i}", n, model_id="s", threshold=0.5, extra={}))
              .assess(data, affine)["score"] for i, n in enumerate(nets)]  # float16 weights
    for says in [(True, True), (True, False), (False, True), (False, False)]:
        members = []
        for i, (net, score, yes) in enumerate(zip(nets, scores, says)):
            threshold = 1 / (1 + np.exp(-(logit(score) + (-0.05 if yes else 0.05))))
            folder = save_detector(tmp_path / f"m{i}{says}", net, model_id=f"m{i}", threshold=threshold,
                                   extra={})
            members.append(load_detector(folder))
        assert [m.assess(data, affine)["motion"] for m in members] == list(says)
        both = load_detector(save_agreeing_detector(tmp_path / f"a{says}", members, model_id="a",
                                                    extra={"training": {"test_subjects": []}}))
        out = both.assess(data, affine)
        assert out["motion"] is all(says) and both.threshold == 0.5
        margins = [logit(score) - logit(m.threshold) for score, m in zip(scores, members)]
        assert logit(out["score"]) == pytest.approx(min(margins), abs=2e-3)


def test_agree_script_records_its_command_and_the_fusion_flag(tmp_path):
    """scripts/agree_slab_models.py writes a folder that says how it was made (its own command and
    each member's training command) and asks for fusion only when told to."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("agree", ROOT / "scripts" / "agree_slab_models.py")
    agree = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agree)
    torch.manual_seed(0)
    training = {"training": {"test_subjects": ["IXI002"]}}
    members = [str(save_detector(tmp_path / f"m{i}", SlabNet().eval(), model_id=f"m{i}", threshold=0.3,
                                 extra={**training, "command": f"bids-qc-train-slab data m{i}"}))
               for i in range(2)]
    assert agree.main([str(tmp_path / "plain"), "--model-id", "p", *members]) == 0
    plain = load_detector(tmp_path / "plain")
    assert not plain.fuses_motion_grade and "fuse_into_motion_grade" not in plain.manifest
    assert agree.main([str(tmp_path / "fused"), "--model-id", "f", *members, "--fuse-into-motion-grade"]) == 0
    fused = load_detector(tmp_path / "fused")
    assert fused.fuses_motion_grade and fused.manifest["model_id"] == "f"
    assert fused.manifest["command"].startswith("python scripts/agree_slab_models.py ")
    assert "--fuse-into-motion-grade" in fused.manifest["command"]
    assert [m["command"] for m in fused.manifest["members"]] == ["bids-qc-train-slab data m0",
                                                                 "bids-qc-train-slab data m1"]
    # --heldout-ixi: the held-out subjects simulated afresh, then scored into heldout_benchmark.json
    import nibabel as nib

    anat = tmp_path / "ixi" / "sub-IXI002" / "anat"
    anat.mkdir(parents=True)
    head = synthetic_head(shape=(64, 72, 64), zoom=2.0, seed=3)
    nib.save(head, anat / "sub-IXI002_T1w.nii.gz")
    assert agree.main([str(tmp_path / "held"), "--model-id", "h", *members, "--heldout-ixi",
                       str(tmp_path / "ixi"), "--heldout-variants", "2", "--cache-dir", str(tmp_path / "c")]) == 0
    bench = json.loads((tmp_path / "held" / "heldout_benchmark.json").read_text())
    assert bench["simulated"]["at_threshold"]["n_moved"] == 2 and bench["real_pairs"] is None
    assert bench["heldout_cache"].endswith("_seed-1234_site-0_psf-0")
    other = str(save_detector(tmp_path / "o", SlabNet().eval(), model_id="o", threshold=0.3,
                              extra={"training": {"test_subjects": ["IXI012"]}}))
    assert agree.main([str(tmp_path / "bad"), "--model-id", "b", members[0], other]) == 1
    assert not (tmp_path / "bad").exists()


def test_air_floor_raises_the_air_of_both_twins_alike_and_leaves_the_head():
    from bids_qc.training.slab.augment import air_floor

    x = torch.zeros(4, 3, 32, 32)
    x[:, :, 8:24, 8:24] = 1.0  # head at the bright level, air 0
    x[1, :, 2, 2] = 0.5  # a ghost in the moved twin's air, brighter than any floor
    rng = np.random.default_rng(0)
    out = air_floor(x, rng, 1.0)
    assert torch.equal(out[:, :, 8:24, 8:24], x[:, :, 8:24, 8:24])  # head unchanged
    air = out[:, :, :8, :]
    assert (air > 0).float().mean() > 0.9 and out[:, :, 3:8].max() <= 0.05 * (1 + 0.8 * 6)
    assert torch.equal(out[0, :, 3:8], out[1, :, 3:8])  # twins share their floor
    assert not torch.equal(out[0, :, :8], out[2, :, :8])  # pairs do not
    assert out[1, 0, 2, 2] == 0.5  # what is above the floor stays
    assert torch.equal(air_floor(x, np.random.default_rng(0), 0.0), x)
