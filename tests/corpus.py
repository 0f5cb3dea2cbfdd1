"""A generator of bad (and awkward-but-valid) T1w scans for reliability tests.

:func:`build_corpus` writes a BIDS dataset in which every *kind* of bad input gets its own
subject (``sub-<label>``), next to good scans, and returns what the app is expected to do
with each kind (:class:`Kind`). The expectations are the table of ``docs/bad_input.md``:

- ``error``: the scan's JSON has status ``error`` with a reason matching ``reason``;
  the scan appears as an error in the group table and the reports; the others go on.
- ``ok``: assessed normally (status ``ok``, a tier), possibly with a warning (``reason``).
- ``no_tier``: status ``ok``, no tier, a "partial coverage" warning (the detectors cannot
  judge a slab).
- ``cannot_judge``: status ``ok``, no tier, no slab motion score, and ``cannot_judge`` in the
  record (and the TSV and both reports) matching ``reason``.

Images are tiny head-like ellipsoids (40x48x40 voxels at 4 mm, as ``conftest.synthetic_head``)
so a dataset of all kinds runs in seconds with a tiny model. Usage::

    from corpus import build_corpus
    kinds = build_corpus(tmp_path / "ds")            # all kinds + 2 good scans
    kinds = build_corpus(tmp_path / "ds", ["zero_byte", "good"])
"""
from __future__ import annotations

import gzip
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import ROOT, synthetic_head, write_dataset_description

SHAPE = (40, 48, 40)
ZOOM = 4.0
#: The acq label of the ``script_name`` kind (no "/" is possible in a file name).
SCRIPT_ACQ = "acq-<script>alert(1)<script><img src=x onerror=alert(2)>"


@dataclass
class Kind:
    """One kind of input: how it is made and what the app must do with it.

    ``outcome``: ``error`` | ``ok`` | ``no_tier`` | ``cannot_judge``. ``stage``: expected
    error stage.
    ``reason``: regex the error message (``error``) or one warning (``ok``/``no_tier``)
    must match; ``None`` = no particular warning expected. ``files``: the
    ``source_file`` paths (relative to the dataset root, :func:`printable`) that must get a
    record, and
    ``skipped``: files that must NOT get one (e.g. the ``.nii`` twin of a ``.nii.gz``).
    ``image``: ``head`` | ``slab`` | ``-`` (see :data:`KINDS`); an ``ok`` kind built on a
    slab is assessed without a tier. ``needs_permissions``: the expectation holds only
    where file permissions are enforced (not for root with CAP_DAC_OVERRIDE).
    """

    name: str
    subject: str
    outcome: str
    description: str
    reason: str | None = None
    stage: str | None = None
    image: str = "head"
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    needs_permissions: bool = False

    @property
    def bids_names(self) -> list[str]:
        return [strip_ext(Path(f).name) for f in self.files]


def printable(text: str) -> str:
    """A file name as the app reports it: bytes that are not UTF-8 shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


# --------------------------------------------------------------------------- image makers
def head(seed: int = 0, shape=SHAPE, zoom: float = ZOOM) -> nib.Nifti1Image:
    """A good tiny head (int16, RAS, ``zoom`` mm)."""
    return synthetic_head(shape=shape, zoom=zoom, seed=seed)


def slab(seed: int = 0) -> nib.Nifti1Image:
    """A 20-slice slab of 2 mm (40 mm of coverage): the app stops after loading it
    ("partial coverage", no tier), so it costs no registration."""
    data = np.asarray(head(seed, shape=(40, 48, 20)).dataobj)
    return nib.Nifti1Image(data, np.diag([ZOOM, ZOOM, 2.0, 1.0]))


def head_data(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.asarray(head(seed, shape).dataobj)


def _save(img, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _gz_bytes(img) -> bytes:
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _with_sform(data, sform, code: int = 1) -> nib.Nifti1Image:
    """An image whose sform is ``sform`` (any matrix, even singular) and qform code 0."""
    img = nib.Nifti1Image(data, None)
    img.header.set_zooms((ZOOM,) * min(3, data.ndim) + (1.0,) * max(0, data.ndim - 3))
    img.header["srow_x"], img.header["srow_y"], img.header["srow_z"] = sform[:3]
    img.header["sform_code"] = code
    img.header["qform_code"] = 0
    return img


def _raw_header_file(path: Path, shape, *, data_bytes: bytes = b"") -> None:
    """A .nii whose header declares ``shape`` (int16) followed by ``data_bytes`` only."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape(shape)
    hdr.set_zooms((ZOOM,) * len(shape))
    affine = np.diag([ZOOM, ZOOM, ZOOM, 1.0])
    hdr.set_sform(affine, 1)
    hdr.set_qform(affine, 1)
    hdr["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + data_bytes)


# --------------------------------------------------------------------------- the kinds
def _t1w(root: Path, sub: str, entities: str = "", ext: str = ".nii.gz") -> Path:
    name = f"sub-{sub}{('_' + entities) if entities else ''}_T1w{ext}"
    return root / f"sub-{sub}" / "anat" / name


def _sidecar(path: Path, text: str | None = None) -> None:
    side = path.parent / (strip_ext(path.name) + ".json")
    side.write_text(text if text is not None else json.dumps(
        {"MagneticFieldStrength": 3, "Manufacturer": "Synthetic", "RepetitionTime": 2.3}))


def _make(kind: str, root: Path, sub: str) -> tuple[list[Path], list[Path]]:
    """Write the files of ``kind`` for subject ``sub``; return (expected records, skipped)."""
    path = _t1w(root, sub)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = sum(map(ord, sub)) % 1000
    image = slab if KINDS[kind][4] == "slab" else head  # the image the kind is built on
    data = head_data(seed)
    affine = head(seed).affine
    if kind == "good":
        _save(head(seed), path)
        _sidecar(path)
    elif kind == "truncated_gz":
        blob = _gz_bytes(head(seed))
        path.write_bytes(blob[: len(blob) // 2])
    elif kind == "not_gzip":
        path.write_bytes(head(seed).to_bytes())  # plain NIfTI under a .nii.gz name
    elif kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "header_only":
        path = _t1w(root, sub, ext=".nii")
        _raw_header_file(path, SHAPE)  # 352-byte header, no voxels (as bids-examples)
    elif kind == "not_nifti":
        path.write_bytes(gzip.compress(b"<html><body>not an image</body></html>\n" * 20))
    elif kind == "image_2d":
        _save(nib.Nifti1Image(data[:, :, SHAPE[2] // 2], affine), path)
    elif kind == "image_4d":
        _save(nib.Nifti1Image(np.stack([data] * 3, axis=-1), affine), path)
    elif kind == "single_volume_4d":
        one = image(seed)
        _save(nib.Nifti1Image(np.asarray(one.dataobj)[..., None], one.affine), path)
    elif kind == "all_zero":
        _save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), affine), path)
    elif kind == "constant":
        _save(nib.Nifti1Image(np.full(SHAPE, 731, np.int16), affine), path)
    elif kind == "all_nan":
        _save(nib.Nifti1Image(np.full(SHAPE, np.nan, np.float32), affine), path)
    elif kind == "many_inf":
        values = data.astype(np.float32)
        values[::4, ::5, :] = np.inf  # 5 % of the voxels
        _save(nib.Nifti1Image(values, affine), path)
    elif kind == "few_nan":
        values = data.astype(np.float32)
        values[:2, :3, :4] = np.nan  # 24 voxels of 76800 (0.03 %)
        _save(nib.Nifti1Image(values, affine), path)
    elif kind == "float64_overflow":
        values = data.astype(np.float64) * 1e300  # beyond float32 (3.4e38)
        _save(nib.Nifti1Image(values, affine), path)
    elif kind == "slope_overflow":
        img = nib.Nifti1Image(data.astype(np.int16), affine)
        img.header.set_slope_inter(1e36, 0.0)  # 1000 * 1e36 overflows float32
        _save(img, path)
    elif kind == "int64_large":
        values = data.astype(np.int64) * (2**40)  # legal, huge integers
        img = nib.Nifti1Image(values, affine, dtype=np.int64)
        _save(img, path)
    elif kind == "singular_affine":
        sform = affine.copy()
        sform[:, 2] = 0.0  # third voxel axis maps nowhere
        _save(_with_sform(data, sform), path)
    elif kind == "nonfinite_affine":
        sform = affine.copy()
        sform[0, 0] = np.nan
        _save(_with_sform(data, sform), path)
    elif kind == "shear_affine":
        sform = affine.copy()
        sform[0, 1] = 0.25 * ZOOM  # x shifts with y: sheared but invertible
        _save(_with_sform(data, sform), path)
    elif kind == "no_orientation":
        img = nib.Nifti1Image(data, None)  # no affine: both codes stay 0
        img.header.set_zooms((ZOOM,) * 3)
        _save(img, path)
    elif kind == "invalid_orientation_codes":
        one = image(seed)
        img = nib.Nifti1Image(np.asarray(one.dataobj), one.affine)
        img.header["qform_code"] = 9  # not a NIfTI code (0-4); nibabel resets them to 0
        img.header["sform_code"] = 7
        img.to_filename(str(path))
    elif kind == "huge_dims":
        path = _t1w(root, sub, ext=".nii")
        _raw_header_file(path, (30000, 30000, 30000), data_bytes=np.zeros(64, np.int16).tobytes())
    elif kind == "tiny_fov":
        _save(slab(seed), path)
    elif kind == "int8_negative":  # signed int8 with the offset -128: air is -128, not 0
        values = np.round(data.astype(np.float32) / data.max() * 255 - 128)
        _save(nib.Nifti1Image(values.astype(np.int8), affine, dtype=np.int8), path)
    elif kind == "tiny_cube":  # 8 x 8 x 8 voxels of 2 mm from the middle of the head
        centre = [n // 2 - 4 for n in SHAPE]
        cube = data[centre[0]:centre[0] + 8, centre[1]:centre[1] + 8, centre[2]:centre[2] + 8]
        _save(nib.Nifti1Image(cube, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    elif kind == "four_slices":  # 4 axial slices of 4 mm through the middle of the head
        middle = SHAPE[2] // 2
        _save(nib.Nifti1Image(data[:, :, middle - 2:middle + 2], affine), path)
    elif kind == "unreadable":
        _save(image(seed), path)
        path.chmod(0)
    elif kind == "dangling_symlink":
        path.symlink_to(root / "nowhere" / "gone_T1w.nii.gz")
    elif kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "missing_sidecar":
        _save(image(seed), path)  # and no .json anywhere (BIDS: recommended, not required)
    elif kind == "corrupt_sidecar":
        _save(image(seed), path)
        _sidecar(path, '{"RepetitionTime": 2.3,,, oops')
    elif kind == "duplicate_runs":
        paths = [_t1w(root, sub, f"run-{r}") for r in (1, 2)]
        for r, p in enumerate(paths):
            _save(image(seed + r), p)
        return paths, []
    elif kind == "nii_and_niigz":
        gz, plain = path, _t1w(root, sub, ext=".nii")
        _save(image(seed), gz)
        _save(image(seed + 1), plain)
        return [gz], [plain]
    elif kind == "non_utf8_name":
        name = os.fsencode(f"sub-{sub}_acq-") + b"caf\xe9" + b"_T1w.nii.gz"
        path = Path(os.fsdecode(os.fsencode(path.parent) + b"/" + name))
        _save(image(seed), path)
    elif kind == "script_name":
        path = _t1w(root, sub, SCRIPT_ACQ)
        _save(image(seed), path)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return [path], []


#: name -> (outcome, error stage, reason regex, description, image), in the order of
#: docs/bad_input.md. ``image``: ``head`` = a full tiny head (registration, detectors, a tier);
#: ``slab`` = the kind is about the file or its name, not the image, so it is built on a
#: 40 mm slab that the app assesses without registration (status ok, no tier) to keep the
#: test fast; ``-`` = the file never gets that far.
KINDS: dict[str, tuple[str, str | None, str | None, str, str]] = {
    "good": ("ok", None, None, "a good head scan with its sidecar", "head"),
    "truncated_gz": ("error", "preprocessing", r"truncated or corrupt",
                     ".nii.gz cut in the middle of the voxel data", "-"),
    "not_gzip": ("error", "preprocessing", r"not gzip-compressed",
                 "an uncompressed NIfTI named .nii.gz", "-"),
    "zero_byte": ("error", "preprocessing", r"empty \(0 bytes\)", "an empty file", "-"),
    "header_only": ("error", "preprocessing", r"truncated",
                    "a .nii with a valid header and no voxel data", "-"),
    "not_nifti": ("error", "preprocessing", r"not a NIfTI",
                  "gzip-compressed HTML named .nii.gz", "-"),
    "image_2d": ("error", "preprocessing", r"2D image", "a single slice (2D image)", "-"),
    "image_4d": ("error", "preprocessing", r"4D image with 3 volumes",
                 "a 4D image of 3 volumes", "-"),
    "single_volume_4d": ("ok", None, None, "a 4D image with one volume (x, y, z, 1)", "slab"),
    "all_zero": ("error", "preprocessing", r"all voxels are 0", "every voxel 0", "-"),
    "constant": ("error", "preprocessing", r"constant", "every voxel 731", "-"),
    "all_nan": ("error", "preprocessing", r"every voxel is NaN", "every voxel NaN", "-"),
    "many_inf": ("error", "preprocessing", r"infinite", "5 % of the voxels +inf", "-"),
    "few_nan": ("ok", None, r"24 NaN voxels .* set to 0",
                "24 NaN voxels (0.03 %), set to 0 with a warning", "head"),
    "float64_overflow": ("error", "preprocessing", r"float32 range",
                         "float64 intensities of 1e300 (beyond float32)", "-"),
    "slope_overflow": ("error", "preprocessing", r"float32 range",
                       "int16 data with scl_slope 1e36 (scaled values overflow)", "-"),
    "int64_large": ("ok", None, None, "int64 voxels up to 2**50 (legal, unusual dtype)",
                    "head"),
    "singular_affine": ("error", "preprocessing", r"singular",
                        "sform with a zero column (no 3D geometry)", "-"),
    "nonfinite_affine": ("error", "preprocessing", r"not finite", "sform with a NaN", "-"),
    "shear_affine": ("ok", None, r"shear", "sform with a 14 degree shear (valid, invertible)",
                     "head"),
    "no_orientation": ("ok", None, r"no orientation", "qform_code = sform_code = 0", "head"),
    "invalid_orientation_codes": ("ok", None, r"no orientation",
                                  "qform_code 9 and sform_code 7 (not NIfTI codes)", "slab"),
    "huge_dims": ("error", "preprocessing", r"too large",
                  "header declares 30000^3 voxels (file holds 128 bytes)", "-"),
    "tiny_fov": ("no_tier", None, r"partial coverage", "a 20-slice slab (40 mm)", "slab"),
    "int8_negative": ("cannot_judge", None, r"background is negative",
                      "signed int8 with air at -128 (offset storage)", "head"),
    "tiny_cube": ("cannot_judge", None, r"field of view too small .*8x8x8 voxels.*slab motion "
                  r"detector could not score it", "8 x 8 x 8 voxels of 2 mm", "-"),
    "four_slices": ("cannot_judge", None, r"field of view too small .*axial slab",
                    "4 axial slices of 4 mm", "-"),
    "unreadable": ("error", "preprocessing", r"Permission denied",
                   "file mode 000 (not readable)", "slab"),
    "dangling_symlink": ("error", "preprocessing", r"dangling symbolic link",
                         "a symlink to nothing", "-"),
    "fifo": ("error", "preprocessing", r"not a regular file",
             "a named pipe (reading would block)", "-"),
    "missing_sidecar": ("ok", None, None, "no JSON sidecar anywhere", "slab"),
    "corrupt_sidecar": ("ok", None, None, "a sidecar that is not valid JSON", "slab"),
    "duplicate_runs": ("ok", None, None, "run-1 and run-2 of the same subject", "slab"),
    "nii_and_niigz": ("ok", None, None, "the same name as .nii and .nii.gz", "slab"),
    "non_utf8_name": ("error", "bids", r"not a valid BIDS file name",
                      "acq label with a Latin-1 byte (invalid UTF-8)", "slab"),
    "script_name": ("error", "bids", r"not a valid BIDS file name",
                    "acq label with <script> and <img onerror> (HTML injection)", "slab"),
}

#: Kinds needing file permissions enforced (skipped for root unless capabilities are dropped).
PERMISSION_KINDS = ("unreadable",)


def subject_of(kind: str) -> str:
    """BIDS subject label of ``kind`` (letters and digits only)."""
    return "".join(c for c in kind.title() if c.isalnum())


def build_corpus(root: Path, kinds=None, *, n_good: int = 2) -> dict[str, Kind]:
    """Write a BIDS dataset at ``root`` with one subject per kind (+ ``n_good`` good scans).

    Returns ``{kind name: Kind}`` (good scans as ``good``, ``good2``, ...). ``kinds``:
    names from :data:`KINDS` (default all except ``good``).
    """
    root = Path(root)
    write_dataset_description(root, "bids_qc bad-input corpus")
    names = [k for k in (kinds or KINDS) if k != "good"]
    out: dict[str, Kind] = {}
    goods = [("good" if i == 0 else f"good{i + 1}") for i in range(n_good)]
    for name in goods + names:
        base = "good" if name.startswith("good") else name
        outcome, stage, reason, description, image = KINDS[base]
        sub = subject_of(name)
        made, skipped = _make(base, root, sub)
        out[name] = Kind(
            name=name, subject=sub, outcome=outcome, description=description, reason=reason,
            stage=stage, image=image,
            files=[printable(p.relative_to(root).as_posix()) for p in made],
            skipped=[printable(p.relative_to(root).as_posix()) for p in skipped],
            needs_permissions=base in PERMISSION_KINDS,
        )
    return out


def tree_state(root: Path) -> dict:
    """Path -> (mode, size, mtime_ns, sha-free content digest) for every entry under ``root``,
    never opening special files or following links (so FIFOs and dangling links are safe)."""
    import hashlib

    state = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            entry = (st.st_mode, st.st_size, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                try:
                    with open(full, "rb") as handle:
                        entry += (hashlib.sha256(handle.read()).hexdigest(),)
                except PermissionError:  # mode 000 without root: mode and size are enough
                    entry += ("unreadable",)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(full),)
            state[os.path.relpath(full, os.fsencode(root))] = entry
    return state


def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which file permissions are enforced, or ``None`` if impossible.

    ``[]`` for a normal user. Root reads and writes through any file mode
    (CAP_DAC_OVERRIDE), so for root: ``setpriv`` dropping CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set (root then obeys modes like the file's
    owner), checked on a mode-000 file.
    """
    import shutil
    import subprocess
    import tempfile

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("secret")
        probe.chmod(0)
        try:
            result = subprocess.run([*prefix, "cat", str(probe)], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
    return prefix if result.returncode != 0 else None


def run_cli(args, prefix=(), timeout=900):
    """``python run.py *args`` in a subprocess (under ``prefix``, e.g. setpriv).

    Returns ``(exit code, stderr text)``; one thread per scan, no network.
    """
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NIPYPE_NO_ET": "1"}
    result = subprocess.run([*prefix, sys.executable, str(ROOT / "run.py"), *map(str, args)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                            errors="backslashreplace")
    return result.returncode, result.stderr
