"""Transfer to a site: fine-tune only the last three fully connected layers.

The convolutional blocks are frozen and every BatchNorm layer stays in eval mode, so the
convolutional features of a scan never change during fine-tuning. They are therefore computed
once per scan (:func:`conv_features`) and the fully connected head is trained on them, which makes
fine-tuning on a few hundred scans a matter of seconds on a CPU. Cross-validation is by subject;
each fold's head (lowest validation loss epoch) becomes one member of the fine-tuned ensemble,
and out-of-fold predictions give honest before/after figures.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from bids_qc.networks import Conv5FC3
from bids_qc.training.calibration import detector_labels
from bids_qc.training.loop import class_weights
from bids_qc.training.metrics import auc, binary_scores
from bids_qc.training.splits import kfold_by_subject
from bids_qc.verdict import positive

LOGGER = logging.getLogger(__name__)


def freeze_for_finetuning(net: Conv5FC3) -> list[nn.Parameter]:
    """Freeze everything but the three Linear layers; returns the trainable parameters."""
    for p in net.parameters():
        p.requires_grad_(False)
    trainable = []
    for layer in net.fc_layers():
        for p in layer.parameters():
            p.requires_grad_(True)
            trainable.append(p)
    return trainable


def set_finetune_mode(net: Conv5FC3) -> None:
    """Head in train mode (dropout on), convolutional blocks and BatchNorm in eval mode."""
    net.train()
    net.features.eval()


@torch.no_grad()
def conv_features(net: Conv5FC3, volumes: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """(N, 1, D, H, W) -> (N, C, d, h, w) output of the frozen convolutional blocks (eval mode)."""
    net.features.eval()
    return torch.cat([net.features(volumes[i:i + batch_size])
                      for i in range(0, len(volumes), batch_size)])


def train_head(net: Conv5FC3, features: torch.Tensor, labels: torch.Tensor, *,
               val_features=None, val_labels=None, epochs: int = 60, lr: float = 1e-4,
               batch_size: int = 6, seed: int = 0) -> tuple[Conv5FC3, dict]:
    """Fine-tune a copy of ``net``'s head on precomputed features. Returns (net, log)."""
    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    params = freeze_for_finetuning(net)
    optimizer = torch.optim.Adam(params, lr=lr)
    weights = class_weights(labels.numpy())
    best = {"loss": float("inf"), "epoch": 0, "state": copy.deepcopy(net.classifier.state_dict())}
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        set_finetune_mode(net)
        order = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(net.classifier(features[idx]), labels[idx], weight=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if val_features is not None and len(val_labels):
            net.eval()
            with torch.no_grad():
                vw = class_weights(val_labels.numpy())
                vloss = float(nn.functional.cross_entropy(net.classifier(val_features), val_labels,
                                                          weight=vw))
            if vloss < best["loss"]:
                best = {"loss": vloss, "epoch": epoch + 1,
                        "state": copy.deepcopy(net.classifier.state_dict())}
    if val_features is not None and len(val_labels):
        net.classifier.load_state_dict(best["state"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)
    return net, {"best_epoch": best["epoch"], "best_val_loss": best["loss"]}


@torch.no_grad()
def head_probabilities(net: Conv5FC3, features: torch.Tensor) -> np.ndarray:
    net.eval()
    return torch.softmax(net.classifier(features), 1)[:, 1].numpy()


def cross_validated_finetune(net: Conv5FC3, volumes: torch.Tensor, labels: np.ndarray,
                             subjects: list[str], *, threshold: float, k: int = 5, seed: int = 0,
                             **kwargs) -> dict:
    """Fine-tune ``net`` with K-fold CV by subject on scans with a valid label (0/1).

    Returns ``{"members": [net per fold], "before": scores, "after": scores (out-of-fold),
    "oof_probabilities", "folds": [...]}``; before/after scores call the detector positive at
    ``threshold`` (the detector's calibrated one, as the app does). ``labels`` may hold -1 for
    scans this detector does not see; they are ignored.
    """
    labels = np.asarray(labels)
    valid = np.flatnonzero(labels >= 0)
    feats = conv_features(net, volumes[valid])
    y = torch.from_numpy(labels[valid]).long()
    subj = [subjects[i] for i in valid]
    before = head_probabilities(net, feats)
    n_subjects = len(set(subj))
    k = max(2, min(k, n_subjects))
    oof = np.full(len(valid), np.nan)
    members, folds = [], []
    for f, (train_s, _val_s) in enumerate(kfold_by_subject(subj, k, seed)):
        tr = np.array([s in set(train_s) for s in subj])
        va = ~tr
        tuned, log = train_head(net, feats[tr], y[tr], val_features=feats[va], val_labels=y[va],
                                seed=seed + f, **kwargs)
        oof[va] = head_probabilities(tuned, feats[va])
        members.append(tuned)
        folds.append({"fold": f, "n_train": int(tr.sum()), "n_val": int(va.sum()), **log})
    y_np = y.numpy()
    return {"members": members, "folds": folds, "n_scans": int(len(valid)),
            "before": binary_scores(y_np, positive(before, threshold)),
            "after": binary_scores(y_np, positive(oof, threshold)),
            "before_probabilities": before, "oof_probabilities": oof, "indices": valid}


@torch.no_grad()
def set_features(nets: dict[str, Conv5FC3], dataset, batch_size: int = 8) -> tuple[dict, np.ndarray]:
    """Every image of ``dataset`` (``(x, grades)`` items) through each detector's frozen
    convolutional blocks, reading each image once: ``({detector: (N, C, d, h, w)}, grades (N, 3))``."""
    feats = {d: [] for d in nets}
    grades = []
    for x, g in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        grades.append(g.numpy())
        for det, net in nets.items():
            feats[det].append(conv_features(net, x, batch_size))
    return {d: torch.cat(f) for d, f in feats.items()}, np.concatenate(grades)


def train_heads(init: dict[str, Conv5FC3], train_set, val_set, schemes, **kwargs) -> tuple[dict, dict]:
    """The site-transfer recipe on a training and a validation set of images: for each
    detector of ``init``, :func:`train_head` on its frozen features (epoch of lowest validation
    loss kept). Returns ``({detector: net}, {detector: log})``; the log has the validation AUC
    before and after."""
    train_feats, train_grades = set_features(init, train_set)
    val_feats, val_grades = set_features(init, val_set)
    train_labels = detector_labels(train_grades, {d: schemes[d] for d in init})
    val_labels = detector_labels(val_grades, {d: schemes[d] for d in init})
    nets, logs = {}, {}
    for det, net in init.items():
        tr, va = train_labels[det] >= 0, val_labels[det] >= 0
        y_val = torch.from_numpy(val_labels[det][va]).long()
        nets[det], log = train_head(net, train_feats[det][tr], torch.from_numpy(train_labels[det][tr]).long(),
                                    val_features=val_feats[det][va], val_labels=y_val, **kwargs)
        before = head_probabilities(net, val_feats[det][va])
        after = head_probabilities(nets[det], val_feats[det][va])
        logs[det] = {**log, "n_train": int(tr.sum()), "n_val": int(va.sum()),
                     "val_auc_before": round(auc(y_val.numpy(), before), 4),
                     "val_auc_after": round(auc(y_val.numpy(), after), 4)}
        LOGGER.info("%s: val AUC %.3f -> %.3f (best epoch %d)", det, logs[det]["val_auc_before"],
                    logs[det]["val_auc_after"], log["best_epoch"])
    return nets, logs
