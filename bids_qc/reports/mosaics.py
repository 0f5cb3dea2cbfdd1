"""Slice mosaics of a volume and saliency heat overlays, as embeddable PNG data URIs.

Mosaics are plain numpy -> PNG (a few ms each), returned as ``data:image/png;base64,...``
URIs, so a report is one self-contained file that opens offline.

Volumes are float arrays indexed (x, y, z) in RAS order: axis 0 left -> right, axis 1
posterior -> anterior, axis 2 inferior -> superior (what the preprocessing gives for the raw
image after reorientation, and what the MNI grids are). Slices are shown in neurological
convention (subject's left on the viewer's left), superior / anterior up.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from bids_qc.reports.png_encoding import data_uri, png_bytes

logger = logging.getLogger(__name__)

#: orientation name -> the volume axis that is sliced
ORIENTATIONS = {"sagittal": 0, "coronal": 1, "axial": 2}
CONTOUR_RGB = (0, 215, 255)


# --------------------------------------------------------------------------- slicing
def intensity_window(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Display window (intensity units of ``volume``): percentiles of the non-zero voxels.

    Uses a strided 3D subsample (about 200k voxels) so a 0.7 mm head costs a few ms.
    """
    vol = np.asarray(volume)
    step = max(1, int(np.ceil((vol.size / 200_000) ** (1 / 3)))) if vol.ndim == 3 else 1
    sample = (vol[::step, ::step, ::step] if vol.ndim == 3 else vol).ravel()
    sample = sample[np.isfinite(sample)]
    nonzero = sample[sample != 0]
    if nonzero.size >= 16:
        sample = nonzero
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [low, high])
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def foreground_ranges(volume: np.ndarray, frac: float = 0.15) -> list[tuple[int, int]]:
    """For each axis, the first and last slice index that holds foreground.

    Foreground: voxels above ``frac`` x the 99th percentile; a slice counts when it holds at
    least 2 % of the largest slice's foreground, so scattered noise voxels do not. Computed on
    a strided copy (at most ~2M voxels), so the ends are exact to within the stride.
    """
    vol = np.asarray(volume)
    step = max(1, int(np.ceil((vol.size / 2_000_000) ** (1 / 3))))
    small = np.nan_to_num(np.asarray(vol[::step, ::step, ::step], dtype=np.float32), nan=0.0)
    flat = small.ravel()[:: max(1, small.size // 200_000)]
    mask = small > frac * float(np.percentile(flat, 99))
    out = []
    for axis in range(3):
        counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        present = np.flatnonzero(counts >= max(1, 0.02 * counts.max()))
        if present.size == 0:
            out.append((0, vol.shape[axis] - 1))
        else:
            out.append((int(present[0]) * step,
                        min(vol.shape[axis] - 1, int(present[-1]) * step + step - 1)))
    return out


def pick_slices(extent: tuple[int, int], n: int = 6, margin: float = 0.12) -> list[int]:
    """``n`` evenly spaced slice indices inside ``extent`` (first, last), ends trimmed by ``margin``."""
    first, last = extent
    span = last - first
    pos = np.linspace(first + margin * span, last - margin * span, n)
    return sorted({int(round(p)) for p in pos})


def display_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D view of slice ``index`` along ``axis``: rows top -> bottom, columns left -> right.

    sagittal (axis 0): rows superior -> inferior, columns posterior -> anterior;
    coronal (axis 1) and axial (axis 2): columns subject left -> right (neurological);
    rows superior -> inferior (coronal) or anterior -> posterior (axial).
    """
    sl = volume[(slice(None),) * axis + (index,)]  # a view; remaining axes in increasing order
    return np.flipud(sl.T)


def pixel_size(zooms, axis: int) -> tuple[float, float]:
    """(row, column) pixel size in mm of :func:`display_slice` along ``axis``."""
    rest = [float(z) for a, z in enumerate(zooms[:3]) if a != axis]
    return rest[1], rest[0]


@lru_cache(maxsize=256)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, pixel centres aligned (like align_corners=False)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    mat = np.zeros((n_out, n_in), dtype=np.float32)
    mat[np.arange(n_out), lo] += 1 - w
    mat[np.arange(n_out), hi] += w
    return mat


def resample_2d(image: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize a 2D array to ``shape`` (bilinear for order 1, nearest for order 0)."""
    rows, cols = image.shape
    if order == 0:
        ri = np.clip(((np.arange(shape[0]) + 0.5) * rows / shape[0]).astype(int), 0, rows - 1)
        ci = np.clip(((np.arange(shape[1]) + 0.5) * cols / shape[1]).astype(int), 0, cols - 1)
        return image[np.ix_(ri, ci)]
    img = np.asarray(image, dtype=np.float32)
    return _interp_matrix(rows, shape[0]) @ img @ _interp_matrix(cols, shape[1]).T


def _display_shape(sl: np.ndarray, pix: tuple[float, float], height: int) -> tuple[int, int]:
    mm_h, mm_w = sl.shape[0] * pix[0], sl.shape[1] * pix[1]
    width = max(1, int(round(height * mm_w / mm_h))) if mm_h > 0 else sl.shape[1]
    return height, width


def _tile_height(shape: tuple[int, int], pix: tuple[float, float], height: int) -> int:
    """Stored tile height: ``height`` at most, but no more pixels than the slice has.

    The browser scales the image up to ``height`` on screen, so a 64-voxel slice is stored at
    ~64-80 px instead of 150 (smaller files, faster encoding, same information).
    """
    rows, cols = shape
    mm_h, mm_w = rows * pix[0], cols * pix[1]
    need = max(rows, cols * mm_h / mm_w) if mm_w > 0 else rows
    return int(min(height, max(32, np.ceil(need))))


def display_size(image: np.ndarray, height: int) -> tuple[int, int]:
    """(width, height) in CSS pixels to show a stored strip at tile height ``height``."""
    return int(round(image.shape[1] * height / image.shape[0])), int(height)


def _to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (np.nan_to_num(image, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _hstack(tiles: list[np.ndarray], gap: int = 3) -> np.ndarray:
    """Tiles side by side, bottom-padded to the tallest, separated by ``gap`` black columns."""
    height = max(t.shape[0] for t in tiles)
    extra = tiles[0].shape[2:]
    parts = []
    for i, tile in enumerate(tiles):
        if tile.shape[0] < height:
            pad = np.zeros((height - tile.shape[0],) + tile.shape[1:], dtype=tile.dtype)
            tile = np.concatenate([tile, pad], axis=0)
        if i:
            parts.append(np.zeros((height, gap) + extra, dtype=tile.dtype))
        parts.append(tile)
    return np.concatenate(parts, axis=1)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 2D boolean mask (inside pixels with an outside 4-neighbour)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


# --------------------------------------------------------------------------- mosaics
def mosaic_strip(volume: np.ndarray, zooms, orientation: str, *, n: int = 6, height: int = 150,
                 window: tuple[float, float] | None = None, slices: list[int] | None = None,
                 contour: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """One row of ``n`` slices of ``volume`` (3D, RAS) as a uint8 image.

    ``zooms`` are voxel sizes in mm (aspect ratio on screen is true to mm); ``height`` is the
    tile height in screen pixels; the stored image may be smaller (:func:`_tile_height`; show
    it with :func:`display_size`). ``contour`` (boolean volume, same shape) is drawn in cyan
    on top and turns the result RGB. Returns (image, slice indices used).
    """
    axis = ORIENTATIONS[orientation]
    vol = np.asarray(volume, dtype=np.float32)
    lo, hi = window or intensity_window(vol)
    if slices is None:
        slices = pick_slices(foreground_ranges(vol)[axis], n)
    pix = pixel_size(zooms, axis)
    tiles = []
    for idx in slices:
        sl = display_slice(vol, axis, idx)
        shape = _display_shape(sl, pix, _tile_height(sl.shape, pix, height))
        tile = _to_uint8(resample_2d(sl, shape, order=1), lo, hi)
        if contour is not None:
            edge = _edges(resample_2d(display_slice(contour, axis, idx).astype(np.uint8), shape,
                                      order=0).astype(bool))
            tile = np.repeat(tile[..., None], 3, axis=2)
            tile[edge] = CONTOUR_RGB
        tiles.append(tile)
    return _hstack(tiles), slices


def mosaic_uris(volume: np.ndarray | None, zooms, *, n: int = 6, height: int = 150,
                contour: np.ndarray | None = None) -> dict:
    """{orientation: {"uri", "slices", "width", "height"}} for the three orientations, or {}."""
    if volume is None:
        return {}
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3 or min(vol.shape) < 2:
        logger.warning("mosaic: expected a 3D volume, got shape %s", vol.shape)
        return {}
    window = intensity_window(vol)
    extents = foreground_ranges(vol)
    out = {}
    for name, axis in ORIENTATIONS.items():
        image, slices = mosaic_strip(vol, zooms, name, n=n, height=height, window=window,
                                     slices=pick_slices(extents[axis], n), contour=contour)
        width, disp_h = display_size(image, height)
        out[name] = {"uri": data_uri(png_bytes(image)), "slices": slices,
                     "width": width, "height": disp_h}
    return out


# The "turbo" colour map sampled at 256 levels (RGB bytes, hex). Turbo: Copyright 2019 Google
# LLC, Apache License 2.0 (Mikhailov, "Turbo, an improved rainbow colormap"); values as in
# matplotlib's copy. Embedded so that a report does not import matplotlib (~1 s per process).
_TURBO_HEX = (
    "30123b32154333184a341b51351e5836215f37246638276d392a733a2d793b2f803c32863d358b3e38913f3b973f3e9c"
    "4040a24143a74146ac4249b1424bb5434eba4451bf4454c34456c74559cb455ccf455ed34661d64664da4666dd4669e0"
    "466be3476ee64771e94773eb4776ee4778f0477bf2467df44680f64682f84685fa4687fb458afc458cfd448ffe4391fe"
    "4294ff4196ff4099ff3e9bfe3d9efe3ba0fd3aa3fc38a5fb37a8fa35abf833adf731aff52fb2f42eb4f22cb7f02ab9ee"
    "28bceb27bee925c0e723c3e422c5e220c7df1fc9dd1ecbda1ccdd81bd0d51ad2d21ad4d019d5cd18d7ca18d9c818dbc5"
    "18ddc218dec018e0bd19e2bb19e3b91ae4b61ce6b41de7b21fe9af20eaac22ebaa25eca727eea42aefa12cf09e2ff19b"
    "32f29835f39438f4913cf58e3ff68a43f78746f8844af8804ef97d52fa7a55fa7659fb735dfc6f61fc6c65fd6969fd66"
    "6dfe6271fe5f75fe5c79fe597dff5680ff5384ff5188ff4e8bff4b8fff4992ff4796fe4499fe429cfe409ffd3fa1fd3d"
    "a4fc3ca7fc3aa9fb39acfb38affa37b1f936b4f836b7f735b9f635bcf534bef434c1f334c3f134c6f034c8ef34cbed34"
    "cdec34d0ea34d2e935d4e735d7e535d9e436dbe236dde037dfdf37e1dd37e3db38e5d938e7d739e9d539ebd339ecd13a"
    "eecf3aefcd3af1cb3af2c93af4c73af5c53af6c33af7c13af8be39f9bc39faba39fbb838fbb637fcb336fcb136fdae35"
    "fdac34fea933fea732fea431fea130fe9e2ffe9b2dfe992cfe962bfe932afe9029fd8d27fd8a26fc8725fc8423fb8122"
    "fb7e21fa7b1ff9781ef9751df8721cf76f1af66c19f56918f46617f36315f26014f15d13f05b12ef5811ed5510ec530f"
    "eb500eea4e0de84b0ce7490ce5470be4450ae2430ae14109df3f08dd3d08dc3b07da3907d83706d63506d43305d23105"
    "d02f05ce2d04cc2b04ca2a04c82803c52603c32503c12302be2102bc2002b91e02b71d02b41b01b21a01af1801ac1701"
    "a91601a71401a41301a112019e10019b0f01980e01950d01920b018e0a018b09028808028507028106027e05027a0403"
)


@lru_cache(maxsize=4)
def _heat_lut(threshold: float = 0.2) -> np.ndarray:
    """(256, 4) uint8 RGBA: turbo colours, alpha 0 below ``threshold`` then rising to ~0.92."""
    v = np.linspace(0, 1, 256)
    lut = np.empty((256, 4), dtype=np.uint8)
    lut[:, :3] = np.frombuffer(bytes.fromhex(_TURBO_HEX), dtype=np.uint8).reshape(256, 3)
    lut[:, 3] = (np.clip((v - threshold) / (1.0 - threshold), 0.0, 1.0) ** 0.7 * 235).astype(np.uint8)
    return lut


def heat_rgba(values: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """(H, W) map in [0, 1] -> RGBA uint8: turbo colours, alpha rising from ``threshold``."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return _heat_lut(threshold)[(v * 255).astype(np.uint8)]


@lru_cache(maxsize=1)
def heat_legend_uri(width: int = 160, height: int = 10) -> str:
    """Colour bar of :func:`heat_rgba` from 0 (left) to 1 (right), opaque."""
    rgba = heat_rgba(np.tile(np.linspace(0.0, 1.0, width), (height, 1)))
    rgba[..., 3] = 255
    return data_uri(png_bytes(rgba))


def saliency_strips(base: np.ndarray, maps: dict, zooms=(2.5, 2.5, 2.5), *, n: int = 6,
                    height: int = 150) -> dict:
    """Base mosaics of ``base`` and transparent heat overlays of each map, same slices.

    ``base`` and every map share one grid (the model grid). Returns
    ``{"base": {orientation: {...}}, "maps": {name: {orientation: uri}}}``.
    """
    vol = np.asarray(base, dtype=np.float32)
    window = intensity_window(vol)
    extents = foreground_ranges(vol)
    out = {"base": {}, "maps": {name: {} for name in maps}}
    for name, axis in ORIENTATIONS.items():
        image, slices = mosaic_strip(vol, zooms, name, n=n, height=height, window=window,
                                     slices=pick_slices(extents[axis], n))
        width, disp_h = display_size(image, height)
        out["base"][name] = {"uri": data_uri(png_bytes(image)), "slices": slices,
                             "width": width, "height": disp_h}
        pix = pixel_size(zooms, axis)
        for det, smap in maps.items():
            smap = np.asarray(smap, dtype=np.float32)
            tiles = []
            for idx in slices:
                sl = display_slice(smap, axis, idx)
                tiles.append(resample_2d(sl, _display_shape(sl, pix, _tile_height(sl.shape, pix, height))))
            out["maps"][det][name] = data_uri(png_bytes(heat_rgba(_hstack(tiles))))
    return out


@lru_cache(maxsize=1)
def template_brain_mask() -> np.ndarray | None:
    """Boolean brain mask on the 2 mm template grid (GM + WM prior > 0.5), or None."""
    try:
        from bids_qc.preprocessing import load_template  # the pipeline's cached copy

        probs = [load_template(f"label-{t}_probseg")[0] for t in ("GM", "WM")]
        total = probs[0] + probs[1]
        if total.max() > 1.5:  # stored as 0..255 without scaling
            total = total / 255.0
        return total > 0.5
    except Exception as exc:  # the contour is a nicety; never fail a report for it
        logger.warning("template brain mask unavailable: %s", exc)
        return None
