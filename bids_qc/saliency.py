"""Grad-CAM saliency: where in the image a detector looked when it called a scan positive.

Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel of a convolutional layer's
activation ``A_c`` by the spatial mean of the gradient of the target logit with respect to it,
``w_c = mean(d y_target / d A_c)``, and keeps ``relu(sum_c w_c A_c)``. The coarse map is
upsampled (trilinear) to the input grid and scaled to [0, 1].

For :class:`bids_qc.networks.Conv5FC3` the default layer is the ReLU of the last conv block
(``features[-1]``), *before* its max-pooling: at the (64, 80, 64) model grid that is a
4 x 5 x 4 map of 128 channels (one cell ~ 40 mm at 2.5 mm voxels), the finest map whose
channels the classifier reads directly.

The layers before that activation run without autograd, and only the gradient with respect
to the activation is computed (``torch.autograd.grad`` on a detached copy), so the backward
pass runs through the head alone: the map costs one inference forward plus a few ms, and
:func:`forward_with_cam` returns the logits too, so inference can get the map for free.
No parameter gradient is touched and the network's train/eval mode is restored afterwards.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)


def default_layer(net: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM reads: the last ReLU (else last Conv) in ``features[-1]``.

    Falls back to ``features[-1]`` itself (e.g. a block without ReLU), and to the last
    ``Conv3d`` anywhere in ``net`` when there is no ``features`` attribute.
    """
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 0:
        block = features[-1]
        for kind in (nn.ReLU, nn.Conv3d):
            found = [m for m in block.modules() if isinstance(m, kind)]
            if found:
                return found[-1]
        return block
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    if not convs:
        raise ValueError("grad_cam: the network has no 'features' Sequential and no Conv3d layer")
    return convs[-1]


def grad_cam(net: nn.Module, x: torch.Tensor, target: int = 1,
             layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM map of ``net`` for logit ``target`` on one image.

    Parameters
    ----------
    net: a network returning logits (N, n_classes); run in eval mode here (restored after).
    x: input tensor (1, 1, D, H, W), on the model grid, intensities as fed to the network.
    target: index of the logit to explain (1 = "artefact present" for the detectors).
    layer: module whose output is explained; default :func:`default_layer`.

    Returns
    -------
    float32 array (D, H, W) in [0, 1]; all zeros when no location raises the target logit.
    """
    return forward_with_cam(net, x, target=target, layer=layer)[1]


def forward_with_cam(net: nn.Module, x: torch.Tensor, target: int = 1,
                     layer: nn.Module | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """One eval-mode forward pass that returns the logits (1, n) *and* the Grad-CAM map.

    Inference can call this instead of ``net(x)``: the layers before ``layer`` run without
    autograd (as under ``torch.no_grad``) and only the head is differentiated, so the map
    costs a few milliseconds on top of the prediction. Same arguments as :func:`grad_cam`.
    """
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(f"grad_cam expects one image shaped (1, C, D, H, W), got {tuple(x.shape)}")
    layer = default_layer(net) if layer is None else layer
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        # A detached leaf: the backward pass stops here, and autograd starts recording here.
        leaf = output.detach().requires_grad_(True)
        captured["act"] = leaf
        torch.set_grad_enabled(True)
        return leaf

    was_training = net.training
    handle = layer.register_forward_hook(hook)
    spatial = tuple(x.shape[2:])
    try:
        net.eval()
        with torch.inference_mode(False), torch.no_grad():
            inp = x.detach().clone().to(dtype=torch.float32)
            try:
                logits = net(inp)
            finally:
                torch.set_grad_enabled(False)  # undo the hook's switch inside this no_grad block
            if "act" not in captured:
                raise ValueError("grad_cam: the chosen layer was not used in the forward pass")
            act = captured["act"]
            grad = None
            if logits.requires_grad:
                with torch.enable_grad():
                    score = logits.reshape(logits.shape[0], -1)[0, int(target)]
                    (grad,) = torch.autograd.grad(score, act, allow_unused=True)
            logits = logits.detach()
            if grad is None:  # the target does not depend on this layer at all
                return logits, np.zeros(spatial, dtype=np.float32)
            weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
            cam = torch.relu((weights * act.detach()).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=spatial, mode="trilinear", align_corners=False)[0, 0]
            peak = float(cam.max())
            if not np.isfinite(peak) or peak <= 0:
                return logits, np.zeros(spatial, dtype=np.float32)
            cam = (cam / peak).clamp_(0.0, 1.0)
            return logits, cam.cpu().numpy().astype(np.float32, copy=False)
    finally:
        handle.remove()
        net.train(was_training)


def saliency_maps(nets: dict[str, nn.Module], x: torch.Tensor, detectors, target: int = 1
                  ) -> dict[str, np.ndarray]:
    """Grad-CAM for each name in ``detectors`` (e.g. the positive ones) -> {name: (D, H, W)}.

    A detector whose map fails is logged and left out; the report then says "no map".
    """
    out = {}
    for name in detectors:
        try:
            out[name] = grad_cam(nets[name], x, target=target)
        except Exception as exc:  # a saliency failure must never fail the scan
            logger.warning("Grad-CAM failed for detector %s: %s", name, exc)
    return out
