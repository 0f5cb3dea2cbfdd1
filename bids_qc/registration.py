"""Affine registration of a head scan to MNI152NLin2009aSym, in-process with SimpleITK.

The shipped MNI T1w is skull-stripped, so the target is a synthetic head built from it
(:func:`head_template`). Registration runs on a two-level pyramid (8 and 4 mm) built once per
image; the result is the transform mapping template points to subject points, as ITK resamples.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from bids_qc.images import bound_resolution, from_sitk, grid_reference, load_template, to_sitk


@lru_cache(maxsize=1)
def head_template() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic *head* target built from the (skull-stripped) MNI brain template.

    The shipped MNI T1w has no skull, so mutual information between a full-head scan and it
    is maximised by squeezing the whole head into the brain. Around the brain we therefore draw
    the layers every T1w head has, by distance from the brain surface: CSF (0-3 mm, dark),
    skull (3-9 mm, darker), scalp (9-15 mm, bright). Head-to-head registration then aligns
    the brain. Intensities are relative to the template's 90th percentile in the brain.
    """
    from scipy import ndimage

    tpl, affine = load_template("T1w")
    brain = ndimage.binary_fill_holes(tpl > 5)
    spacing = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[0])
    dist = ndimage.distance_transform_edt(~brain) * spacing
    level = float(np.percentile(tpl[brain], 90))
    head = tpl.copy()
    for low, high, value in ((0, 3, 0.15), (3, 9, 0.08), (9, 15, 0.8)):
        head[(dist > low) & (dist <= high)] = value * level
    return ndimage.gaussian_filter(head, 0.7).astype(np.float32), affine


def _run_registration(moving, fixed, transform, iterations, sampling, threads, seed):
    """Mattes MI, regular-step gradient descent, one level (the caller builds the pyramid)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-6, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.SetNumberOfThreads(threads)
    reg.Execute(fixed, moving)
    return transform, reg


PITCH_STARTS_DEG = (-20.0, -10.0, 0.0, 10.0)
COARSE_MM, FINE_MM = 8.0, 4.0
SAMPLING = {"coarse": 0.2, "fine": 0.1}
ITERATIONS = {"starts": 40, "similarity": 30, "affine": 40}


@lru_cache(maxsize=1)
def template_pyramid() -> dict:
    """The synthetic head target at 8 and 4 mm, and the MNI brain (mask, values) at 4 mm."""
    tpl, affine = load_template("T1w")
    head = to_sitk(head_template()[0], affine)
    fine_tpl = from_sitk(bound_resolution(to_sitk(tpl, affine), FINE_MM))
    fine_brain = from_sitk(bound_resolution(to_sitk((tpl > 5).astype(np.float32), affine), FINE_MM)) > 0.5
    return {"full": head, "coarse": bound_resolution(head, COARSE_MM),
            "fine": bound_resolution(head, FINE_MM), "brain": fine_brain,
            "brain_values": fine_tpl[fine_brain]}


def register_affine(moving: sitk.Image, threads: int = 1, seed: int = 1) -> tuple[sitk.Transform, dict]:
    """Affine (12 dof) registration of a head scan to the synthetic head template.

    Both images are smoothed and resampled once to 8 and 4 mm (the pyramid). Similarity (7 dof)
    runs at 8 mm from four pitch starts (-20 to +10 degrees about the left-right axis, centres
    of mass aligned); the start whose result correlates best with the MNI brain at 4 mm is
    refined at 4 mm, then an affine stage runs at 4 mm and is kept only if it improves that
    correlation. Returns the transform mapping template points to subject points (as ITK
    resamples) and the recorded parameters.
    """
    pyr = template_pyramid()
    coarse, fine = bound_resolution(moving, COARSE_MM), bound_resolution(moving, FINE_MM)

    def brain_correlation(transform) -> float:
        """Pearson correlation with the template inside its brain (4 mm): the selection criterion."""
        moved = from_sitk(sitk.Resample(fine, pyr["fine"], transform, sitk.sitkLinear, 0.0,
                                        sitk.sitkFloat32))
        return float(np.corrcoef(moved[pyr["brain"]], pyr["brain_values"])[0, 1])

    candidates = []
    for pitch in PITCH_STARTS_DEG:
        sim = sitk.CenteredTransformInitializer(
            pyr["full"], moving, sitk.Similarity3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS)
        sim.SetRotation((1.0, 0.0, 0.0), float(np.deg2rad(pitch)))
        sim, _ = _run_registration(coarse, pyr["coarse"], sim, ITERATIONS["starts"],
                                   SAMPLING["coarse"], threads, seed)
        candidates.append((brain_correlation(sim), pitch, sim))
    _, pitch, sim = max(candidates, key=lambda c: c[0])
    sim, _ = _run_registration(fine, pyr["fine"], sim, ITERATIONS["similarity"],
                               SAMPLING["fine"], threads, seed)
    cc_sim = brain_correlation(sim)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(sim.GetCenter())
    affine.SetMatrix(sim.GetMatrix())
    affine.SetTranslation(sim.GetTranslation())
    start = sitk.AffineTransform(affine)
    affine, reg = _run_registration(fine, pyr["fine"], affine, ITERATIONS["affine"],
                                    SAMPLING["fine"], threads, seed)
    cc = brain_correlation(affine)
    if cc < cc_sim:  # the affine stage made things worse: keep the similarity solution
        affine, cc = start, cc_sim
    params = {"target": "MNI152NLin2009aSym brain + synthetic CSF/skull/scalp layers",
              "metric": "MattesMI", "bins": 32, "sampling": dict(SAMPLING), "sampling_seed": seed,
              "pyramid_mm": [COARSE_MM, FINE_MM], "iterations": dict(ITERATIONS),
              "stage1": {"transform": "similarity", "pitch_starts_deg": list(PITCH_STARTS_DEG),
                         "chosen_pitch_deg": pitch, "brain_correlation": round(cc_sim, 4)},
              "stage2": {"transform": "affine", "iterations": reg.GetOptimizerIteration()},
              "final_metric": reg.GetMetricValue(), "brain_correlation": round(cc, 4), "correlation_at_mm": FINE_MM,
              "stop": stop_note(reg.GetOptimizerStopConditionDescription())}
    return affine, params


def stop_note(description: str) -> str:
    """The optimiser's stop condition worded as the information it is: ITK says "Maximum number
    of iterations (40) exceeded." when the fixed iteration budget of a stage is used up, which
    is how every registration here ends (the result is checked by ``brain_correlation``)."""
    match = re.search(r"Maximum number of iterations \((\d+)\) exceeded", description or "")
    if match is None:
        return description
    return (f"used its budget of {match[1]} iterations (as planned: a fixed budget, not a "
            "convergence test, ends this stage; brain_correlation checks the result)")


def transform_to_ras_matrix(transform: sitk.Transform) -> list[list[float]]:
    """4x4 matrix mapping template RAS mm to subject RAS mm (the affine found by registration)."""
    points = np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50]], float)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    lps = np.eye(4)
    lps[:3, :] = np.linalg.lstsq(np.c_[points, np.ones(4)], mapped, rcond=None)[0].T
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return (flip @ lps @ flip).round(6).tolist()


def ras_matrix_to_transform(matrix) -> sitk.AffineTransform:
    """The inverse of :func:`transform_to_ras_matrix`: a template-RAS -> subject-RAS 4x4 matrix
    as the ITK transform (LPS) that resampling uses."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ np.asarray(matrix, float) @ flip
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(lps[:3, :3].ravel()))
    transform.SetTranslation(tuple(lps[:3, 3]))
    return transform


def resample(moving: sitk.Image, transform: sitk.Transform, shape, affine) -> np.ndarray:
    ref = grid_reference(shape, affine)
    out = sitk.Resample(moving, ref, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return from_sitk(out)
