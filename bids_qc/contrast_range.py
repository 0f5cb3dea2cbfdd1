"""Whether a scan's grey/white contrast lies where the contrast detectors were trained.

The contrast grade is defined by how far an artefact lowers a scan's ND-WGM, but the detectors
read a scan's contrast against their training scans' (``benchmarks/bench_contrast_curves.py``):
on scanners whose clean scans have more contrast than any IXI training scan (Prisma ND-WGM
0.18-0.19, studyforrest 0.28) they did not call drops of up to 37 %, while on IXI severe is
called from ~22 %. So the grade of such a scan is not evidence of good contrast, and the record
says so with a warning. The reference is the model's own: ``contrast_reference`` in its manifest
(``scripts/contrast_reference.py``); a model without it gets no warning.
"""
from __future__ import annotations

import math


def contrast_warning(nd_wgm, manifest: dict) -> str | None:
    """The warning for a scan whose measured ND-WGM is above every clean training scan's of the
    model (``manifest["contrast_reference"]``), else None (also when either is missing)."""
    reference = (manifest.get("contrast_reference") or {}).get("nd_wgm_clean")
    if not reference or nd_wgm is None or not math.isfinite(nd_wgm) or nd_wgm <= reference["max"]:
        return None
    return (f"contrast grade unreliable: this scan's grey/white contrast (ND-WGM {nd_wgm:.3f}) is above "
            f"every training scan's (at most {reference['max']:.3f}); on such scanners the contrast "
            "detectors missed drops of up to 37 % (model card)")
