"""Training loop for several detectors on shared simulated batches.

Per detector: Adam (lr 1e-4), 2-logit cross-entropy with class weights N / (K * N_c) computed on
the epoch's labels, images whose grade the detector does not see (e.g. grade 2 for a moderate
detector) masked out. After each epoch the network is validated and the weights of the best
epoch are kept: lowest validation loss, or with ``select_on="auc"`` highest validation AUC.
Progress (epoch, losses, validation AUC and balanced accuracy, ETA) is logged; ``max_minutes``
stops training between epochs when the next one would not fit.

A warm start (``init``) scores the starting weights on the validation images first, as epoch 0
of the history: they are kept unless a trained epoch beats them, so continuing a model can never
make it worse on validation by the selection criterion, and both are scored on the same images.

With ``ema_decay`` an exponential moving average of the weights (and BatchNorm statistics) is
updated after every optimiser step (``torch.optim.swa_utils.AveragedModel``), starting from the
initial weights; it is the averaged network that is validated and kept. When the validation loss
of the raw weights swings from epoch to epoch, picking its lowest epoch mostly picks a lucky draw
of the validation images (a winner's curse); the average is steadier.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from bids_qc.grading import LABEL_SCHEMES, binary_labels
from bids_qc.networks import Conv5FC3
from bids_qc.record import ARTEFACTS
from bids_qc.training.metrics import auc, binary_scores

LOGGER = logging.getLogger(__name__)


def labels_for(detector: str, grades: torch.Tensor, schemes=LABEL_SCHEMES) -> torch.Tensor:
    """Binary labels (-1 = excluded) of a (N, 3) grade tensor for ``detector``."""
    col = ARTEFACTS.index(detector.split("_")[0])
    return torch.from_numpy(binary_labels(detector, grades[:, col].tolist(), schemes))


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """N / (K * N_c) over the valid (0/1) labels; 1 for an absent class."""
    labels = labels[labels >= 0]
    counts = np.array([(labels == c).sum() for c in (0, 1)], float)
    weights = np.where(counts > 0, len(labels) / (2 * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class DetectorState:
    net: nn.Module
    optimizer: torch.optim.Optimizer
    best_score: tuple = (float("inf"),)  # lower is better, see selection_score
    best_epoch: int = -1
    best_state: dict | None = None
    history: list = field(default_factory=list)
    ema: AveragedModel | None = None

    @property
    def best(self) -> dict | None:
        """The history entry of the kept epoch (None before any epoch was scored)."""
        return next((h for h in self.history if h["epoch"] == self.best_epoch), None)

    @property
    def validated(self) -> nn.Module:
        """The network that is validated and kept: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.net


@torch.no_grad()
def evaluate(nets: dict, loader: DataLoader, schemes=LABEL_SCHEMES,
             thresholds: dict | None = None) -> tuple[dict, dict, np.ndarray]:
    """Per detector: loss (class-weighted CE), balanced accuracy etc. at its threshold (default
    0.5); probabilities; grades."""
    probs = {d: [] for d in nets}
    all_grades = []
    for net in nets.values():
        net.eval()
    for x, grades in loader:
        all_grades.append(grades.numpy())
        for det, net in nets.items():
            probs[det].append(torch.softmax(net(x), 1)[:, 1].numpy())
    grades = np.concatenate(all_grades)
    results = {}
    for det in nets:
        p = np.concatenate(probs[det])
        labels = labels_for(det, torch.from_numpy(grades), schemes).numpy()
        valid = labels >= 0
        w = class_weights(labels).numpy()
        eps = 1e-7
        pv, lv = p[valid], labels[valid]
        nll = -(lv * np.log(pv + eps) + (1 - lv) * np.log(1 - pv + eps))
        loss = float((w[lv] * nll).sum() / w[lv].sum())
        results[det] = {"loss": loss, "auc": auc(lv, pv),
                        **binary_scores(lv, pv >= (thresholds or {}).get(det, 0.5))}
        probs[det] = p
    return results, probs, grades


def train_detectors(detectors, train_set, val_set, *, input_shape, epochs: int = 30,
                    batch_size: int = 6, lr: float = 1e-4, max_minutes: float | None = None,
                    seed: int = 0, schemes=LABEL_SCHEMES, init: dict | None = None,
                    ema_decay: float | None = None, select_on: str = "loss") -> dict:
    """Train ``detectors`` (names) together; returns {det: DetectorState} with best weights loaded
    (of the weight average when ``ema_decay`` is given; best by ``select_on``, see
    :func:`selection_score`)."""
    if select_on not in SELECTION:
        raise ValueError(f"select_on must be one of {sorted(SELECTION)}, got {select_on!r}")
    torch.manual_seed(seed)
    states = {}
    for det in detectors:
        net = copy.deepcopy(init[det]) if init else Conv5FC3(input_shape)
        states[det] = DetectorState(net, torch.optim.Adam(net.parameters(), lr=lr))
        if ema_decay is not None:
            ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            ema.update_parameters(net)  # the first update copies: the average starts at the init
            states[det].ema = ema
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False)
    if init:
        _score_epoch(states, val_loader, schemes, 0, {d: [] for d in detectors}, select_on)
        LOGGER.info("epoch 0 (starting weights) %s", _summary(states))
    t_start = time.perf_counter()
    epoch_times = []
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        if max_minutes is not None and epoch_times:
            remaining = max_minutes * 60 - (t_epoch - t_start)
            if remaining < np.mean(epoch_times):
                LOGGER.info("stopping before epoch %d: %.1f min budget reached", epoch + 1, max_minutes)
                break
        train_set.set_epoch(epoch)
        epoch_grades = torch.tensor([[g[a] for a in ARTEFACTS]
                                     for g in map(train_set.grades, range(len(train_set)))])
        weights = {d: class_weights(labels_for(d, epoch_grades, schemes).numpy()) for d in detectors}
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
        running = {d: [] for d in detectors}
        for st in states.values():
            st.net.train()
        for x, grades in loader:
            for det, st in states.items():
                labels = labels_for(det, grades, schemes)
                valid = labels >= 0
                if valid.sum() == 0:
                    continue
                logits = st.net(x[valid])
                loss = nn.functional.cross_entropy(logits, labels[valid], weight=weights[det])
                st.optimizer.zero_grad()
                loss.backward()
                st.optimizer.step()
                if st.ema is not None:
                    st.ema.update_parameters(st.net)
                running[det].append(loss.item())
        _score_epoch(states, val_loader, schemes, epoch + 1, running, select_on)
        epoch_times.append(time.perf_counter() - t_epoch)
        eta = np.mean(epoch_times) * (epochs - epoch - 1) / 60
        LOGGER.info("epoch %d/%d (%.0f s, ETA %.1f min) %s", epoch + 1, epochs, epoch_times[-1], eta,
                    _summary(states))
    for st in states.values():
        if st.best_state is not None:
            st.net.load_state_dict(st.best_state)
        st.net.eval()
    return states


SELECTION = {
    "loss": "lowest validation loss",
    "auc": "highest validation AUC (ties: lower loss)",
}


def selection_score(entry: dict, select_on: str) -> tuple:
    """Sort key of a history entry, lower is better. ``auc`` ranks by validation AUC, which does
    not depend on where the threshold lies (thresholds are chosen after training) nor on how
    confident the probabilities are; an undefined AUC (one class absent) never wins."""
    if select_on == "auc":
        a = entry["val_auc"]
        return (-a if np.isfinite(a) else float("inf"), entry["val_loss"])
    return (entry["val_loss"],)


def _score_epoch(states: dict, val_loader: DataLoader, schemes, epoch: int, running: dict,
                 select_on: str) -> None:
    """Validate every detector's network, append the epoch to its history, keep it if best."""
    val, _, _ = evaluate({d: s.validated for d, s in states.items()}, val_loader, schemes)
    for det, st in states.items():
        train_loss = float(np.mean(running[det])) if running[det] else None
        entry = {"epoch": epoch, "train_loss": train_loss,
                 **{f"val_{k}": v for k, v in val[det].items()}}
        st.history.append(entry)
        score = selection_score(entry, select_on)
        if score < st.best_score:
            st.best_score, st.best_epoch = score, epoch
            st.best_state = copy.deepcopy(st.validated.state_dict())


def _summary(states: dict) -> str:
    """Progress line of the latest scored epoch, one part per detector."""
    parts = []
    for det, st in states.items():
        h = st.history[-1]
        train = "-" if h["train_loss"] is None else f"{h['train_loss']:.3f}"
        parts.append(f"{det}: train {train} val {h['val_loss']:.3f} auc {h['val_auc']:.3f} "
                     f"bacc {h['val_balanced_accuracy']:.3f}")
    return " | ".join(parts)
