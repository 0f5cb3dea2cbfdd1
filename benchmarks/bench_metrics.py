#!/usr/bin/env python
"""Calibration curves and speed of the image-quality metrics (issue 6), on real IXI scans.

    python benchmarks/bench_metrics.py [--data ../shared/data] [--n 5] [--no-fov] [--no-app]

For each of the first N IXI subjects: N4 bias field of the clean scan, the affine transform to the
2 mm template found by the app (bids_qc.preprocessing.preprocess; ``--registration own``: this
script's SimpleITK registration, Mattes MI restricted to the template brain, similarity then
affine), then artefacts simulated on the *native* scan, divided by the same bias field and
resampled with the same transform (linear), as the app would see a scan that came out of the
scanner that way:

- noise: Rician, sigma in the reference scale (99.5th percentile of the registered scan = 255,
  the unit of bids_qc.simulation's presets: moderate 5-15, severe 15-25) -> SNR should fall;
- contrast: gamma = exp(log_beta) on the image scaled to [0, 1] (presets: moderate -0.2..-0.05,
  severe -0.45..-0.3) -> ND-WGM should fall;
- motion: torchio Motion, 4 movements at fixed times and directions per scan, rotation (degrees)
  and translation (mm) of the given size on each axis -> AES and Tenengrad should fall.

Prints every curve, the mean curve, how many scans are strictly monotonic, the grade means beside
the published clinical means, and the time per compute_metrics call. ``--no-fov`` estimates the
field of view from the image zeros (what the app does unless it passes ``fov``). Unless
``--no-app``, the clean scans are also run through bids_qc.preprocessing.preprocess (N4 + the
app's registration) to show the values the app reports today.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from bids_qc.images import from_sitk, to_sitk  # noqa: E402
from bids_qc.metrics import compute_metrics, load_priors, tenengrad  # noqa: E402

TEMPLATE_T1W = ROOT / "bids_qc" / "data" / "tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz"
NOISE_SIGMAS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
LOG_GAMMAS = (0.0, -0.05, -0.1, -0.2, -0.3, -0.45)
MOTION_SIZES = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0)
NOISE_GRADES = {0: 0.0, 1: 10.0, 2: 20.0}  # middle of the presets' ranges
CONTRAST_GRADES = {0: 0.0, 1: -0.125, 2: -0.375}
PUBLISHED_SNR = {0: 74, 1: 44, 2: 25}
PUBLISHED_ND_WGM = {0: 0.16, 1: 0.13, 2: 0.10}


def n4_bias_field(native: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Multiplicative N4 bias field on the native grid (fitted on a 2x shrunk copy, Otsu mask)."""
    import SimpleITK as sitk

    image = to_sitk(native - float(native.min()) + 1e-3, affine)
    small = sitk.Shrink(image, [2, 2, 2])
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([20, 20, 10])
    n4.SetNumberOfThreads(1)
    n4.Execute(small, sitk.OtsuThreshold(small, 0, 1, 200))
    log_field = from_sitk(n4.GetLogBiasFieldAsImage(image))
    return np.exp(log_field).astype(np.float32)


class Scan:
    """A native scan, its affine transform to the template and a resampler using it."""

    def __init__(self, path: Path, registration: str = "own"):
        img = nib.as_closest_canonical(nib.load(str(path)))
        self.path = path
        self.native = np.asarray(img.dataobj, dtype=np.float32)
        self.affine, self.zooms = img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])
        self.bias = n4_bias_field(self.native, self.affine)
        tpl = nib.load(str(TEMPLATE_T1W))
        self.tpl_shape, self.tpl_affine = tpl.shape, tpl.affine
        self.matrix = None  # template voxel -> native voxel (4x4), when the app registered
        if registration == "app":
            from bids_qc.preprocessing import preprocess

            ras = np.array(preprocess(path).record["registration"]["template_to_subject_ras"])
            self.matrix = np.linalg.inv(self.affine) @ ras @ self.tpl_affine
        else:
            self._register_own(tpl)
        self.fov = self.resample(np.ones_like(self.native), correct=False) > 0.999
        clean = self.resample(self.native)
        self.reference = 255.0 / float(np.percentile(clean[clean > 0], 99.5))

    def _register_own(self, tpl) -> None:
        import SimpleITK as sitk

        self.fixed = to_sitk(np.asarray(tpl.dataobj, np.float32), tpl.affine)
        moving = to_sitk(self.native / self.bias, self.affine)
        # the template is skull-stripped: restrict the metric to its brain, or MI pulls the
        # template brain onto the whole head (~20 % too large); similarity first, then affine
        mask = sitk.Cast(to_sitk((np.asarray(tpl.dataobj) > 0).astype(np.float32), tpl.affine),
                         sitk.sitkUInt8)

        def stage(initial, shrink, smoothing_mm):
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(32)
            reg.SetMetricSamplingStrategy(reg.REGULAR)
            reg.SetMetricSamplingPercentage(0.2, 1)
            reg.SetMetricFixedMask(mask)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 100)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(list(shrink))
            reg.SetSmoothingSigmasPerLevel(list(smoothing_mm))
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
            reg.SetInitialTransform(initial, inPlace=False)
            reg.SetNumberOfThreads(1)
            return reg.Execute(self.fixed, moving)

        similarity = stage(sitk.CenteredTransformInitializer(
            self.fixed, moving, sitk.Similarity3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS), (4, 2), (2.0, 1.0))
        if similarity.GetName() == "CompositeTransform":
            similarity = sitk.CompositeTransform(similarity).GetNthTransform(0)
        similarity = sitk.Similarity3DTransform(similarity)
        affine = sitk.AffineTransform(3)
        affine.SetMatrix(similarity.GetMatrix())
        affine.SetTranslation(similarity.GetTranslation())
        affine.SetCenter(similarity.GetCenter())
        self.transform = stage(affine, (2, 1), (1.0, 0.0))

    def resample(self, volume: np.ndarray, correct: bool = True) -> np.ndarray:
        """``volume`` (native grid) bias-corrected with the clean scan's N4 field (the coil's,
        whatever the artefact), then resampled onto the template grid."""
        import SimpleITK as sitk

        if correct:
            volume = volume / self.bias
        if self.matrix is not None:  # the app's transform: linear interpolation, 0 outside
            from scipy import ndimage as ndi

            return ndi.affine_transform(volume.astype(np.float32), self.matrix[:3, :3],
                                        self.matrix[:3, 3], output_shape=self.tpl_shape,
                                        order=1, mode="constant", cval=0.0)
        out = sitk.Resample(to_sitk(volume, self.affine), self.fixed, self.transform,
                            sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return from_sitk(out)


def rician(volume: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    real = volume + rng.normal(0.0, sigma, volume.shape)
    return np.sqrt(real**2 + rng.normal(0.0, sigma, volume.shape) ** 2).astype(np.float32)


def gamma(volume: np.ndarray, log_gamma: float) -> np.ndarray:
    top = float(volume.max())
    return ((np.clip(volume, 0, None) / top) ** math.exp(log_gamma) * top).astype(np.float32)


def motion(volume: np.ndarray, affine: np.ndarray, size: float, seed: int) -> np.ndarray:
    """4 movements at fixed random times; every rotation (deg) and translation (mm) component has
    magnitude ``size`` x a fixed factor in [0.5, 1] and a fixed random sign."""
    import torch
    import torchio as tio

    rng = np.random.default_rng(seed)
    factors = rng.uniform(0.5, 1.0, (2, 4, 3)) * rng.choice([-1.0, 1.0], (2, 4, 3))
    times = np.sort(rng.uniform(0.1, 0.9, 4))
    transform = tio.Motion(degrees=factors[0] * size, translation=factors[1] * size, times=times,
                           image_interpolation="linear")
    image = tio.ScalarImage(tensor=torch.from_numpy(volume[None].copy()), affine=affine)
    return np.abs(transform(image).data[0].numpy()).astype(np.float32)


def strictly(values, decreasing=True) -> bool:
    pairs = zip(values, values[1:], strict=False)
    return all((a > b) if decreasing else (a < b) for a, b in pairs)


def fmt_row(label: str, values) -> str:
    return f"  {label:<12}" + "".join(f"{v:>10.4g}" for v in values)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("BIDS_QC_DATA", ROOT / ".." / "shared" / "data")))
    ap.add_argument("--n", type=int, default=5, help="number of IXI scans (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fov", action="store_true", help="estimate the FOV from the image zeros")
    ap.add_argument("--no-app", action="store_true", help="skip the run through preprocess()")
    ap.add_argument("--registration", choices=("app", "own"), default="app",
                    help="app: the transform bids_qc.preprocessing.preprocess finds (default); "
                         "own: this script's SimpleITK registration")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    scans = sorted((args.data / "ixi").glob("sub-*/anat/sub-*_T1w.nii.gz"))[:args.n]
    if not scans:
        print(f"no IXI scans under {args.data / 'ixi'}; set --data or BIDS_QC_DATA")
        return 1
    gm, wm = load_priors()
    curves = {"snr vs noise sigma": [], "nd_wgm vs log gamma": [], "aes vs motion": [],
              "tenengrad vs motion": []}
    times, grade_snr, grade_nd = [], {g: [] for g in NOISE_GRADES}, {g: [] for g in CONTRAST_GRADES}

    def run(scan: Scan, volume: np.ndarray) -> dict:
        registered = scan.resample(volume)
        t, cpu = time.perf_counter(), time.process_time()
        metrics, notes = compute_metrics(registered, gm, wm, volume, scan.zooms,
                                         fov=None if args.no_fov else scan.fov)
        times.append((time.perf_counter() - t, time.process_time() - cpu))
        if notes:
            print(f"    notes: {notes}")
        return metrics

    for i, path in enumerate(scans):
        t = time.perf_counter()
        scan = Scan(path, args.registration)
        print(f"\n{path.name}  (registration {time.perf_counter() - t:.1f} s, "
              f"reference scale x{scan.reference:.3f})")
        seed = args.seed + i
        noise = [run(scan, rician(scan.native, s / scan.reference, seed) if s else scan.native)
                 for s in NOISE_SIGMAS]
        contrast = [run(scan, gamma(scan.native, g) if g else scan.native) for g in LOG_GAMMAS]
        moved = [run(scan, motion(scan.native, scan.affine, m, seed) if m else scan.native)
                 for m in MOTION_SIZES]
        for grade, sigma in NOISE_GRADES.items():
            grade_snr[grade].append(noise[NOISE_SIGMAS.index(sigma)]["snr"])
        for grade, log_gamma in CONTRAST_GRADES.items():
            vol = gamma(scan.native, log_gamma) if log_gamma else scan.native
            grade_nd[grade].append(noise[0]["nd_wgm"] if not log_gamma else run(scan, vol)["nd_wgm"])
        rows = {"snr vs noise sigma": [m["snr"] for m in noise],
                "nd_wgm vs log gamma": [m["nd_wgm"] for m in contrast],
                "aes vs motion": [m["aes"] for m in moved],
                "tenengrad vs motion": [m["tenengrad"] for m in moved]}
        for label, values in (("sigma", NOISE_SIGMAS), ("snr", rows["snr vs noise sigma"]),
                              ("(nd_wgm)", [m["nd_wgm"] for m in noise]),
                              ("log gamma", LOG_GAMMAS), ("nd_wgm", rows["nd_wgm vs log gamma"]),
                              ("motion", MOTION_SIZES), ("aes", rows["aes vs motion"]),
                              ("tenengrad", rows["tenengrad vs motion"])):
            print(fmt_row(label, values))
        for key, values in rows.items():
            curves[key].append(values)

    print(f"\n=== mean curves over {len(scans)} scans (strictly monotonic: scans / total; "
          "'below clean' = every degraded point lower than the clean one) ===")
    for key, axis in (("snr vs noise sigma", NOISE_SIGMAS), ("nd_wgm vs log gamma", LOG_GAMMAS),
                      ("aes vs motion", MOTION_SIZES), ("tenengrad vs motion", MOTION_SIZES)):
        values = np.array(curves[key])
        mono = sum(strictly(list(v)) for v in values)
        below = sum(bool(np.all(v[1:] < v[0])) for v in values)
        print(f"{key}: strictly decreasing {mono}/{len(values)}, below clean {below}/{len(values)}")
        print(fmt_row("x", axis) + "\n" + fmt_row("mean", values.mean(axis=0)))

    print("\n=== grade means (IXI: 8-bit, 2 mm, so absolute SNR is not comparable) ===")
    for grade in NOISE_GRADES:
        print(f"  noise grade {grade} (sigma {NOISE_GRADES[grade]:>4}): SNR mean "
              f"{np.mean(grade_snr[grade]):7.1f}   published {PUBLISHED_SNR[grade]}")
    for grade in CONTRAST_GRADES:
        print(f"  contrast grade {grade} (log gamma {CONTRAST_GRADES[grade]:>6}): ND-WGM mean "
              f"{np.mean(grade_nd[grade]):.3f}   published {PUBLISHED_ND_WGM[grade]}")

    wall, cpu = np.array(times).T
    print(f"\n=== speed: compute_metrics on IXI ({'estimated' if args.no_fov else 'given'} FOV), "
          f"{len(wall)} calls: wall median {np.median(wall):.3f} s (max {wall.max():.3f}), "
          f"CPU median {np.median(cpu):.3f} s (max {cpu.max():.3f}) ===")
    single = args.data / "singles" / "sub-studyforrest" / "anat" / "sub-studyforrest_T1w.nii.gz"
    if single.is_file():
        img = nib.as_closest_canonical(nib.load(str(single)))
        data = np.asarray(img.dataobj, dtype=np.float32)
        t, cpu = time.perf_counter(), time.process_time()
        value = tenengrad(data, img.header.get_zooms()[:3])
        print(f"tenengrad on {single.name} {data.shape}: {value:.4g} in "
              f"{time.perf_counter() - t:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")

    if not args.no_app:
        try:
            from bids_qc.preprocessing import preprocess
        except ImportError as exc:
            print(f"\n(app preprocessing unavailable: {exc})")
            return 0
        print("\n=== clean scans as the app computes them (preprocess: N4 + its registration, "
              "reference scale, FOV estimated) ===")
        for path in scans:
            pre = preprocess(path)
            metrics, notes = compute_metrics(pre.registered, gm, wm, pre.native, pre.native_zooms)
            print(f"  {path.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                  + (f"  notes {notes}" if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
