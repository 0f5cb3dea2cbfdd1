"""A small derivatives tree with participant and group reports, for the Chromium check.

Used by ``scripts/check_reports_chromium.py``. The records are decided as the app decides them
(:func:`bids_qc.verdict.verdict`) at the shipped model's calibrated per-detector thresholds
(from its manifest), so the reports show what a real run would. Scans: one IXI scan when the
shared data is there (the bundled MNI template otherwise), one in error, one whose file name
carries ``<script>``, two slabs judged by the slab motion detector alone (no tier), and a
second group report from a table with fine-tuned columns (``tier_ft`` ... ``model_id_ft``),
where some fine-tuned tiers differ from the shipped ones.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EVIL = '<script>window.__pwned=1</script>'
SHIPPED = ROOT / "bids_qc" / "data" / "models" / "conv5fc3-ixi-v2.6" / "manifest.json"
SLAB_THRESHOLD = 0.5
FT_SUFFIX = "-finetuned-2026-12-06"


@lru_cache(maxsize=1)
def shipped_model() -> tuple[str, dict]:
    """``(model id, {detector: calibrated threshold})`` of the shipped model."""
    from bids_qc.record import DETECTORS

    manifest = json.loads(SHIPPED.read_text())
    return manifest["model_id"], {d: float(manifest["detectors"][d]["threshold"]) for d in DETECTORS}


@lru_cache(maxsize=4)
def _template(name: str) -> np.ndarray:
    import nibabel as nib

    path = ROOT / "bids_qc" / "data" / f"tpl-MNI152NLin2009aSym_res-2_{name}.nii.gz"
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def _entities(bids_name: str) -> dict:
    entities = {"subject": bids_name.split("_")[0].removeprefix("sub-")}
    for part in bids_name.split("_")[1:-1]:
        if part.startswith("ses-"):
            entities["session"] = part[4:]
        elif part.startswith("run-"):
            entities["run"] = int(part[4:])
    return entities


def demo_assessment(bids_name: str, *, native=None, zooms=(2.0, 2.0, 2.0), error: bool = False,
                    untrained: bool = True, seed: int = 0, probabilities: dict | None = None,
                    slab: dict | None = None, real_saliency: bool = False):
    """A ScanAssessment-like object with realistic arrays (template-based) and a full record,
    decided at the shipped thresholds. ``slab``: a slab judged by the slab detector only."""
    from scipy.ndimage import zoom

    from bids_qc.record import DETECTORS, new_record, set_error
    from bids_qc.verdict import verdict

    rng = np.random.default_rng(seed)
    model_id, thresholds = shipped_model()
    record = new_record(f"/data/{bids_name}.nii.gz")
    record.update(bids_name=bids_name, entities=_entities(bids_name),
                  model={"id": model_id, "trained": not untrained, "dir": "models/conv5fc3-ixi-v2.6",
                         "thresholds": dict(thresholds)})
    if error:
        set_error(record, ValueError("file is empty (0 bytes)"), "load")
        return SimpleNamespace(record=record, native=None, native_zooms=None, model_input=None,
                               registered=None, saliency={})
    t1 = _template("T1w")
    if slab is not None:  # 20 sagittal slices: no tier, the slab detector's verdict only
        record["slab_motion"] = {"model_id": "slab-motion-agree-v1", "score": slab["score"],
                                 "threshold": SLAB_THRESHOLD, "motion": slab["score"] >= SLAB_THRESHOLD,
                                 "n_triplets": 8, "note": None, "fused": True}
        record["warnings"].append("partial coverage: 40 mm left-right; the six detectors need a whole head")
        native = t1[35:55]
        return SimpleNamespace(record=record, native=native, native_zooms=(2.0, 2.0, 2.0),
                               model_input=None, registered=None, saliency={})
    registered = t1 / t1.max() + rng.normal(0, 0.02, t1.shape).astype(np.float32)
    model_input = np.clip(zoom(t1[1:-1, 8:-9, :], (64 / 97, 80 / 100, 64 / 95), order=1) / t1.max(), 0, 1)
    model_input = model_input.astype(np.float32)[:64, :80, :64]
    probs = probabilities or {d: float(p) for d, p in zip(DETECTORS, rng.uniform(0, 1, 6), strict=False)}
    record.update(verdict(probs, thresholds).record_fields())
    record["slab_motion"] = {"model_id": "slab-motion-agree-v1", "score": float(rng.uniform(0, 0.4)),
                             "threshold": SLAB_THRESHOLD, "motion": False, "n_triplets": 60, "note": None,
                             "fused": True}
    record["metrics"] = {"snr": float(rng.uniform(8, 30)), "nd_wgm": float(rng.uniform(0.1, 0.4)),
                         "aes": float(rng.uniform(0.2, 0.6)), "tenengrad": float(rng.uniform(1, 5))}
    record["metrics_notes"] = {}
    record["preprocessing"] = {"reorient": "RAS", "n4": {"iterations": [50, 50, 30], "shrink": 4},
                               "registration": {"method": "affine", "cost": 0.183,
                                                "transform": np.eye(4).tolist()},
                               "crop": {"grid": [64, 80, 64], "zooms_mm": 2.5}}
    record["timings"] = {"load": 0.05, "n4": 0.6, "register": 0.9, "inference": 0.4, "metrics": 0.1}
    if untrained:
        record["warnings"].append("untrained model: the detector weights are random")
    positives = [d for d in DETECTORS if probs[d] >= thresholds[d]]
    saliency = _demo_saliency(model_input, positives, seed, real_saliency)
    if native is None:
        native = t1  # the template stands in for the raw scan
        zooms = (2.0, 2.0, 2.0)
    return SimpleNamespace(record=record, native=np.asarray(native, dtype=np.float32),
                           native_zooms=tuple(zooms), model_input=model_input,
                           registered=registered.astype(np.float32), saliency=saliency)


def _demo_saliency(model_input: np.ndarray, detectors, seed: int, real: bool) -> dict:
    """Smooth blobs; with ``real``, Grad-CAM of untrained Conv5FC3 nets for the first scan
    (seed 0) when torch and the network are available (importing torch costs seconds)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in model_input.shape], indexing="ij"))
    out = {}
    for i, det in enumerate(detectors):
        centre = np.array([0.4 * np.sin(i + seed), 0.3 * np.cos(i), 0.2 * i - 0.2])[:, None, None, None]
        out[det] = np.exp(-((grid - centre) ** 2).sum(0) / 0.15).astype(np.float32)
    if seed != 0 or not real:
        return out
    try:
        import torch

        from bids_qc.networks import Conv5FC3
        from bids_qc.saliency import grad_cam
    except ImportError:
        return out
    x = torch.from_numpy(model_input)[None, None]
    for i, det in enumerate(detectors):
        for s in range(8):  # an untrained net can have no region raising the logit
            torch.manual_seed(50 * i + s)
            cam = grad_cam(Conv5FC3(model_input.shape), x)
            if cam.max() > 0:
                out[det] = cam
                break
    return out


def _load_ixi(data: Path):
    """One IXI scan as (RAS array, zooms) or None."""
    try:
        import nibabel as nib

        path = sorted((data / "ixi").glob("sub-*/anat/*_T1w.nii.gz"))[0]
        img = nib.as_closest_canonical(nib.load(path))
        return np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()[:3]
    except Exception:  # absent data: the template stands in
        return None


SPECS = [("sub-01_ses-1_run-1_T1w", {"probabilities": {
             "motion_moderate": 0.91, "motion_severe": 0.62, "noise_moderate": 0.12,
             "noise_severe": 0.03, "contrast_moderate": 0.55, "contrast_severe": 0.08}}),
         ("sub-02_T1w", {"seed": 2}),
         ("sub-03_T1w", {"seed": 3, "error": True}),
         (f"sub-04_acq-{EVIL}_T1w", {"seed": 4}),
         ("sub-05_ses-2_T1w", {"seed": 5, "untrained": False}),
         ("sub-06_acq-slab_T1w", {"slab": {"score": 0.83}}),
         ("sub-07_acq-slab_T1w", {"slab": {"score": 0.21}})]


def _row(rec: dict, i: int) -> dict:
    from bids_qc.record import DETECTORS

    slab = rec.get("slab_motion") or {}
    row = {"bids_name": rec["bids_name"], "source_file": rec["source_file"],
           "subject": rec["entities"]["subject"], "session": rec["entities"].get("session"),
           "run": rec["entities"].get("run"), "status": rec["status"],
           "error": (rec["error"] or {}).get("message"), "tier": rec["tier"],
           "model_id": rec["model"]["id"], "needs_review": rec.get("needs_review"),
           "uncertainty": rec.get("uncertainty"), "site": "siteA" if i % 2 else "siteB",
           "slab_motion_score": slab.get("score"), "slab_motion": slab.get("motion"),
           "slab_motion_threshold": slab.get("threshold")}
    row.update({f"grade_{k}": (rec["grades"] or {}).get(k) for k in ("motion", "noise", "contrast")})
    row.update({f"p_{d}": (rec["probabilities"] or {}).get(d) for d in DETECTORS})
    row.update(rec["metrics"] or {})
    return row


def finetuned_table(table):
    """``table`` plus the columns group fine-tuning writes: each tiered scan re-decided at the
    same thresholds from shifted probabilities, ``model_id_ft`` and the review queue."""
    import pandas as pd

    from bids_qc.record import ARTEFACTS, DETECTORS
    from bids_qc.review_priority import review_queue
    from bids_qc.verdict import verdict

    model_id, thresholds = shipped_model()
    shift = [-0.5, 0.35, 0.0, 0.3, -0.35, 0.0, 0.0]  # tiers 3->1, 2->3 (seeded draws), ...
    out = table.copy()
    verdicts = {}
    for i, row in table.iterrows():
        if pd.isna(row["tier"]):
            continue
        probs = {d: float(np.clip(row[f"p_{d}"] + shift[i], 0.001, 0.999)) for d in DETECTORS}
        verdicts[i] = verdict(probs, thresholds)
    for d in DETECTORS:
        out[f"p_{d}_ft"] = [verdicts[i].probabilities[d] if i in verdicts else None for i in out.index]
    for a in ARTEFACTS:
        out[f"grade_{a}_ft"] = pd.array([verdicts[i].grades[a] if i in verdicts else None
                                         for i in out.index], dtype="Int64")
    out["tier_ft"] = pd.array([verdicts[i].tier if i in verdicts else None for i in out.index], dtype="Int64")
    out["uncertainty"] = [verdicts[i].uncertainty if i in verdicts else None for i in out.index]
    queue = review_queue(out["bids_name"], out["uncertainty"].tolist())
    for column in queue:
        out[column] = queue[column].array
    out["model_id_ft"] = [model_id + FT_SUFFIX if i in verdicts else None for i in out.index]
    return out


def build_demo(out: Path, data: Path | None = None, real_saliency: bool = False) -> dict:
    """Write a small derivatives tree with participant reports and two group reports (shipped
    verdicts; fine-tuned verdicts). Returns paths, the names and both tables."""
    import pandas as pd

    from bids_qc.record import DETECTORS
    from bids_qc.reports import write_group_report, write_participant_report

    ixi = _load_ixi(data) if data else None
    paths, rows = {}, []
    for i, (name, kw) in enumerate(SPECS):
        if i == 0 and ixi is not None:
            kw = {**kw, "native": ixi[0], "zooms": ixi[1]}
        a = demo_assessment(name, real_saliency=real_saliency, **kw)
        rec = a.record
        ses = rec["entities"].get("session")
        rel = Path(f"sub-{rec['entities']['subject']}") / (f"ses-{ses}" if ses else "") / "anat"
        paths[name] = write_participant_report(a, out / rel / f"{name}_qc.html")
        rows.append(_row(rec, i))
    table = pd.DataFrame(rows)
    table["tier"] = pd.array(table["tier"], dtype="Int64")
    finetune = {"n_rated": 40, "folds": 5,
                **{d: {"before": 0.70 + 0.02 * i, "after": 0.78 + 0.02 * i} for i, d in enumerate(DETECTORS)}}
    group = write_group_report(table, out / "group_qc.html", out, finetune=finetune)
    tuned = finetuned_table(table)
    model_id, _ = shipped_model()
    group_ft = write_group_report(tuned, out / "group_finetuned_qc.html", out,
                                  finetune={**finetune, "model_id": model_id + FT_SUFFIX,
                                            "parent_model": model_id})
    names = [s[0] for s in SPECS]
    return {"participant": paths[names[0]], "error": paths[names[2]], "evil": paths[names[3]],
            "slab": paths[names[5]], "group": group, "group_finetuned": group_ft, "names": names,
            "table": table, "table_finetuned": tuned, "thresholds": shipped_model()[1]}
