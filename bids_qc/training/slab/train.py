"""Train the slab motion detector on cached IXI stacks (``bids-qc-train-slab``).

Batches are half still, half moved slice triplets drawn from random subjects, augmented
(:mod:`.augment`), with soft targets (:func:`.augment.soft_target`). Each epoch scores the
validation subjects per scan (mean logit over triplets) and the epoch with the lowest
validation loss is kept. The threshold calls 90 % of the validation scans moved by >= 1 deg/mm
"motion" (:func:`sensitivity_threshold`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bids_qc.slab_detector.detector import score_stack
from bids_qc.slab_detector.network import SlabNet
from bids_qc.slab_detector.slices import HEAD_FRACTION_OF_PEAK, normalise, triplet_centres
from bids_qc.training.slab.augment import air_floor, augment, soft_target
from bids_qc.training.slab.evaluation import BINS, CLEAR_MOTION, auc_by_amplitude

LOGGER = logging.getLogger(__name__)
TARGET_SENSITIVITY = 0.9  # of validation scans moved by >= CLEAR_MOTION (see sensitivity_threshold)


@dataclass
class Stacks:
    """One scan's still/moved pairs: ``still[k]`` and ``moved[k]`` share an acquisition
    (:mod:`.cache`), so their slices line up; ``amplitude[k]`` is the motion of ``moved[k]``."""
    subject: str
    still: list[np.ndarray]  # (n_k, H, W) uint8 each
    moved: list[np.ndarray]
    amplitude: np.ndarray  # (k,)

    @classmethod
    def load(cls, subject: str, path) -> Stacks:
        with np.load(path) as z:
            n = len(z["amplitude"])
            return cls(subject, [z[f"still_{k}"] for k in range(n)],
                       [z[f"moved_{k}"] for k in range(n)], z["amplitude"])

    def centres(self) -> list[np.ndarray]:
        return [triplet_centres(s.astype(np.float32), HEAD_FRACTION_OF_PEAK) for s in self.still]

    def scans(self):
        """``(amplitude, float32 stack)`` of every still scan (amplitude 0) and moved scan."""
        for a, still, moved in zip(self.amplitude.tolist(), self.still, self.moved):
            yield 0.0, still.astype(np.float32)
            yield float(a), moved.astype(np.float32)


def draw_batch(subjects: list[Stacks], centres: list[list[np.ndarray]], size: int,
               rng: np.random.Generator, weights: np.ndarray | None = None,
               contrast_fraction: float = 0.0,
               air_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Half still, half moved triplets; each moved triplet's still twin (same scan, acquisition and
    slices) is in the batch too, so the loss contrasts motion, not scanners. ``weights``: the
    probability of drawing each subject (default: uniform); ``air_fraction``: share of pairs
    given a smooth air floor (:func:`.augment.air_floor`)."""
    xs, ys = [], []
    for _ in range(size // 2):
        s = int(rng.integers(len(subjects))) if weights is None else int(rng.choice(len(subjects), p=weights))
        stacks = subjects[s]
        k = int(rng.integers(len(stacks.amplitude)))
        if len(centres[s][k]) == 0:
            k = 0
        c = int(rng.choice(centres[s][k]))
        for stack, target in ((stacks.still[k], 0.0), (stacks.moved[k], soft_target(float(stacks.amplitude[k])))):
            xs.append(normalise(stack[c - 1:c + 2].astype(np.float32)))
            ys.append(target)
    x = torch.from_numpy(np.stack(xs))
    if air_fraction > 0:  # drawn only when asked for: runs without it keep their draws
        x = air_floor(x, rng, air_fraction)
    return augment(x, rng, contrast_fraction), torch.tensor(ys, dtype=torch.float32)


def subject_weights(n_site: int, n_extra: int, extra_share: float) -> np.ndarray | None:
    """Draw probabilities: the ``n_extra`` scans of other scanners (listed after the training
    site's ``n_site`` subjects) together get ``extra_share`` of the pairs; None = uniform."""
    if n_extra == 0 or extra_share <= 0:
        return None
    if n_site == 0:
        return np.full(n_extra, 1.0 / n_extra)
    return np.concatenate([np.full(n_site, (1 - extra_share) / n_site),
                           np.full(n_extra, extra_share / n_extra)])


def evaluate(net: SlabNet, subjects: list[Stacks], stride: int = 2) -> dict:
    """Per-scan scores of still and moved validation stacks: loss, AUCs by amplitude."""
    amps, scores = [], []
    for stacks in subjects:
        for a, stack in stacks.scans():
            amps.append(a)
            scores.append(score_stack(net, stack, stride=stride))
    amps, scores = np.array(amps), np.array(scores)
    labels = np.array([soft_target(a) for a in amps])
    logits = torch.logit(torch.from_numpy(scores).clamp(1e-6, 1 - 1e-6))
    loss = float(F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels)))
    aucs = auc_by_amplitude(amps, scores)
    return {"loss": loss, "scores": scores.tolist(), "amplitudes": amps.tolist(),
            **{key: aucs[label] for label, key, _, _ in BINS}}


def sensitivity_threshold(scores, amplitudes, sensitivity: float = TARGET_SENSITIVITY) -> float:
    """The highest threshold that still calls ``sensitivity`` of the validation scans moved by
    >= ``CLEAR_MOTION`` "motion" (score >= threshold).

    Not the Youden point: on the training site still and moved scans separate perfectly, so every
    threshold in the gap is "optimal" there, and the gap's low end lies below the still scans of
    other sites, whose scores sit higher (another scanner, other processing). Putting the
    threshold on the moved side of the gap, at a stated sensitivity, keeps the verdict usable
    elsewhere at the cost of the mildest motion.
    """
    scores, amplitudes = np.asarray(scores, float), np.asarray(amplitudes, float)
    moved = np.sort(scores[amplitudes >= CLEAR_MOTION])
    if moved.size == 0:
        return 0.5
    return float(moved[int(np.floor((1.0 - sensitivity) * moved.size))])


def train(train_set: list[Stacks], val_set: list[Stacks], *, epochs: int, batches: int,
          batch_size: int = 32, lr: float = 1e-3, seed: int = 0, max_minutes: float = 1e9,
          input_blur_mm: float = 0.0, extra_set: list[Stacks] = (), extra_share: float = 0.0,
          contrast_fraction: float = 0.0, air_fraction: float = 0.0, norm: str = "batch",
          progress=print) -> tuple[SlabNet, list[dict], dict]:
    """Returns the best network (lowest validation loss), the epoch history and its validation.

    ``extra_set``: still/moved pairs of other scanners' scans, trained on only, drawn for
    ``extra_share`` of the pairs (:func:`subject_weights`); ``contrast_fraction``: share of
    triplets given a random tone curve (:func:`.augment.tone_curve`); ``air_fraction``: share of
    pairs given a smooth air floor (:func:`.augment.air_floor`); ``norm``: SlabNet's
    normalisation."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SlabNet(input_blur_mm=input_blur_mm, norm=norm)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * batches)
    weights = subject_weights(len(train_set), len(extra_set), extra_share)
    train_set = list(train_set) + list(extra_set)
    centres = [s.centres() for s in train_set]
    history, best, best_state, best_val = [], np.inf, None, None
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        losses = []
        for _ in range(batches):
            x, y = draw_batch(train_set, centres, batch_size, rng, weights, contrast_fraction,
                              air_fraction)
            loss = F.binary_cross_entropy_with_logits(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        net.eval()
        val = evaluate(net, val_set)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)),
               **{k: v for k, v in val.items() if k not in ("scores", "amplitudes")},
               "minutes": round((time.time() - t0) / 60, 2)}
        history.append(row)
        progress(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if val["loss"] < best:
            best, best_val = val["loss"], val
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        if (time.time() - t0) / 60 > max_minutes:
            progress(f"stopping after epoch {epoch}: time budget of {max_minutes} min used")
            break
    net.load_state_dict(best_state)
    net.eval()
    return net, history, best_val


def load_stacks(paths: dict[str, Path], subjects) -> list[Stacks]:
    return [Stacks.load(s, paths[s]) for s in subjects if s in paths]
