"""Group level with annotations, end to end: fine-tune, re-score, flag, reuse the new model.

The tests of that run are marked ``slow`` (a participant run of 8 scans plus the group level: 15-25 s
on two cores); ``.ci/run`` runs them: ``pytest -m slow tests/test_finetune_group.py``."""
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_head, write_dataset_description

from bids_qc.cli.run import main
from bids_qc.model_inputs import load_model_input
from bids_qc.models import make_untrained_bundle
from bids_qc.preprocessing import ModelGrid

TINY = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))


@pytest.fixture(scope="module")
def rated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    bids = root / "bids"
    write_dataset_description(bids)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        img = synthetic_head(seed=i)
        data = np.asarray(img.dataobj).astype(np.float32)
        noisy = i % 2
        if noisy:
            data = np.sqrt((data + rng.normal(0, 150, data.shape)) ** 2 + rng.normal(0, 150, data.shape) ** 2)
        path = bids / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(data.astype(np.int16), img.affine), path)
        rows.append(f"sub-{i:02d}_T1w\tsub-{i:02d}\tn/a\tn/a\t0\t{noisy}\t0\tn/a\t")
    ratings = root / "ratings.tsv"
    ratings.write_text("bids_name\tparticipant_id\tsession\trun\tmotion\tnoise\tcontrast\ttier_override\t"
                       "comment\n" + "\n".join(rows) + "\n")
    model = make_untrained_bundle(root / "model", grid=TINY, seed=0)
    out = root / "out"
    rc_p = main([str(bids), str(out), "participant", "--model-dir", str(model), "--nprocs", "2",
                 "--no-reports"])
    rc_g = main([str(bids), str(out), "group", "--annotations", str(ratings), "--model-dir",
                 str(model), "--no-reports"])
    return {"root": root, "bids": bids, "out": out, "ratings": ratings, "model": model,
            "rc": (rc_p, rc_g)}


@pytest.mark.slow
def test_group_finetuning_writes_a_model_and_rescores(rated_run):
    assert rated_run["rc"] == (0, 0)
    out = rated_run["out"]
    folders = list((out / "models").glob("*-finetuned-*"))
    assert len(folders) == 1
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["parent_model"].startswith("conv5fc3-untrained")
    assert manifest["finetuning"]["n_rated"] == 8
    noise = manifest["metrics"]["cross_validated"]["noise_moderate"]
    assert noise["status"] == "fine-tuned" and "before" in noise and "after" in noise
    assert len(manifest["files"]) == manifest["finetuning"]["k_folds"] >= 2
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    for col in ("p_noise_moderate_ft", "tier_ft", "uncertainty", "needs_review",
                "review_rank", "model_id_ft"):
        assert col in table and table[col].notna().all(), col
    assert (table["model_id_ft"] == folders[0].name).all()
    # the queue orders: ranks 1..8 by decreasing information, only the top 20 % flagged
    assert sorted(table["review_rank"]) == list(range(1, 9))
    by_rank = table.sort_values("review_rank")
    assert by_rank["uncertainty"].is_monotonic_decreasing
    flagged = table[table["needs_review"]]
    assert 1 <= len(flagged) <= 2 and set(flagged["review_rank"]) <= {1, 2}
    summary = json.loads((out / "group_summary.json").read_text())
    assert summary["finetuning"]["model_dir"] == str(folders[0])
    assert summary["finetuning"]["n_needs_review"] == len(flagged)
    # every scan is rated motion 0: no site threshold for the slab detector, said so
    assert "kept the shipped threshold" in summary["slab_motion_site"]["status"]
    # the participant level reuses the stored model inputs; nothing was preprocessed twice
    stored = sorted(out.rglob("*_desc-preproc_T1w.nii.gz"))
    assert len(stored) == 8
    # ... and what was stored is the normalised input itself (min 0, max 1), not a rounded copy
    for path in stored:
        volume = load_model_input(path, TINY)
        assert volume.min() == 0.0 and volume.max() == pytest.approx(1.0, abs=1e-4), path.name


@pytest.mark.slow
def test_participant_level_accepts_the_finetuned_model(rated_run, tmp_path):
    folder = next((rated_run["out"] / "models").glob("*-finetuned-*"))
    out = tmp_path / "again"
    assert main([str(rated_run["bids"]), str(out), "participant", "--participant-label", "01",
                 "--model-dir", str(folder), "--no-reports"]) == 0
    record = json.loads(next(out.rglob("*_qc.json")).read_text())
    assert record["model"]["id"] == folder.name
    assert "probability_std" in record and record["needs_review"] in (True, False)


@pytest.mark.slow
@pytest.mark.parametrize("body", ["bids_name\tmotion\tnoise\tcontrast\nsub-00_T1w\t0\t5\t0\n",
                                  "bids_name\tmotion\tnoise\tcontrast\nsub-99_T1w\t0\t0\t0\n"])
def test_bad_ratings_exit_65(rated_run, tmp_path, body, caplog):
    ratings = tmp_path / "bad.tsv"
    ratings.write_text(body)
    rc = main([str(rated_run["bids"]), str(rated_run["out"]), "group", "--annotations", str(ratings),
               "--model-dir", str(rated_run["model"]), "--no-reports"])
    assert rc == 65
    assert "row 1" in caplog.text


def _group_again(rated_run, out, ratings):
    """The group level again, with its report this time."""
    return main([str(rated_run["bids"]), str(out), "group", "--annotations", str(ratings),
                 "--model-dir", str(rated_run["model"])])


@pytest.mark.slow
def test_rerun_never_overwrites_a_finetuned_model(rated_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(rated_run["out"], out)
    first = next((out / "models").glob("*-finetuned-*"))
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    assert _group_again(rated_run, out, rated_run["ratings"]) == 0
    folders = sorted((out / "models").glob("*-finetuned-*"))
    assert len(folders) == 2 and folders[0] == first and folders[1].name == first.name + "-2"
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert (table["model_id_ft"] == folders[1].name).all()
    # the group report shows the fine-tuned verdicts and names the model that decided them
    report = (out / "group_report.html").read_text()
    banner = report[report.index('id="decided-by"'):report.index("</div>", report.index('id="decided-by"'))]
    assert "fine-tuned model" in banner and folders[1].name in banner
    # ... and the site slab-threshold choice (every scan rated motion 0: the shipped one is kept)
    assert "Site threshold: kept the shipped threshold" in report
    assert "fewer than 2 rated scans per class" in report
    for row in table.itertuples():
        assert f'data-tier="{row.tier_ft}"' in report.split(f'data-name="{row.bids_name.lower()}"')[0].rsplit("<tr", 1)[1]


@pytest.mark.slow
def test_no_model_is_written_when_nothing_can_be_tuned(rated_run, tmp_path, caplog):
    """Every scan rated 0 for everything: no detector has both classes, so nothing is tuned,
    no model folder is written and the table keeps the shipped verdicts only."""
    out = tmp_path / "out"
    shutil.copytree(rated_run["out"], out, ignore=shutil.ignore_patterns("models"))
    ratings = tmp_path / "zeros.tsv"
    ratings.write_text("bids_name\tmotion\tnoise\tcontrast\n"
                       + "".join(f"sub-{i:02d}_T1w\t0\t0\t0\n" for i in range(8)))
    assert _group_again(rated_run, out, ratings) == 0
    assert not (out / "models").exists() or not list((out / "models").iterdir())
    summary = json.loads((out / "group_summary.json").read_text())
    assert summary["finetuning"]["status"].startswith("nothing tuned")
    assert "model_dir" not in summary["finetuning"]
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert not any(c.endswith("_ft") for c in table.columns)
    assert "no model written" in caplog.text
    assert "Verdicts by the shipped model" in (out / "group_report.html").read_text()


def test_review_queue_flags_a_fraction_by_information():
    from bids_qc.review_priority import decision_entropy, review_bits, review_queue

    assert decision_entropy(0.8, 0.8) == pytest.approx(1.0)
    assert decision_entropy(0.5, 0.8) > decision_entropy(0.1, 0.8) > decision_entropy(0.01, 0.8)
    # at threshold 0.86, p = 0.6 is a clear negative... but less clear than p = 0.05
    assert decision_entropy(0.6, 0.86) > decision_entropy(0.05, 0.86)
    thresholds = {"a": 0.5, "b": 0.86}
    assert review_bits({"a": 0.5, "b": None}, thresholds) == pytest.approx(1.0)
    assert review_bits({"a": None}, thresholds) is None
    bits = [0.1, 2.5, None, 1.2, 0.7, 0.3, 0.2, 0.05, 0.4, 0.6, 3.0]
    q = review_queue([f"s{i:02d}" for i in range(len(bits))], bits)
    assert q["review_rank"].tolist()[:4] == [9, 2, pd.NA, 3]
    assert q["review_rank"].iloc[10] == 1
    # 10 scored scans -> the top 2 flagged; the unscored one is neither ranked nor flagged
    assert q["needs_review"].fillna(False).tolist() == [False, True, False] + [False] * 7 + [True]
    assert pd.isna(q["needs_review"].iloc[2])
    # scans far from every threshold are never flagged, even at the top of the queue
    calm = review_queue(["x", "y"], [0.2, 0.1])
    assert not calm["needs_review"].any() and calm["review_rank"].tolist() == [1, 2]


def test_rescore_reads_the_fused_slab_verdict_and_the_site_one_when_adopted(tmp_path):
    """Group re-scoring gives the motion grade the participant level would: the slab verdict is
    read only when the record says it was fused, and the site's adopted verdict replaces the
    shipped one."""
    from bids_qc.models import load_bundle
    from bids_qc.training.finetune_group import rescore
    from bids_qc.verdict import slab_fused_motion

    bundle = load_bundle(make_untrained_bundle(tmp_path / "m", grid=TINY, seed=0))
    inputs = {f"s{i}": np.random.default_rng(i).uniform(0, 1, TINY.shape).astype(np.float32)
              for i in range(4)}
    base = pd.DataFrame({"bids_name": list(inputs), "wm_snr": [np.nan] * 4,
                         "slab_motion": [True, False, True, pd.NA]})
    alone = rescore(base, inputs, bundle)["grade_motion_ft"].tolist()
    fused = rescore(base.assign(slab_motion_fused=[True, True, False, True]), inputs, bundle)
    expected = [slab_fused_motion(alone[0], True), slab_fused_motion(alone[1], False), alone[2], alone[3]]
    assert fused["grade_motion_ft"].tolist() == expected
    assert fused["grade_motion_ft"][0] >= 1
    site = base.assign(slab_motion_fused=[True] * 4, slab_motion_site=[False, True, False, True])
    by_site = rescore(site, inputs, bundle)["grade_motion_ft"].tolist()
    assert by_site == [slab_fused_motion(g, s) for g, s in zip(alone, [False, True, False, True], strict=True)]
    assert by_site[1] >= 1 and by_site[0] in (0, 2)
