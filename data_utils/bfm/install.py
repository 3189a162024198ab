"""`download_bfm.sh`: verify the user's Basel Face Model 2009 files and install them as one compact file.

Inputs (found by name, case-insensitively, anywhere under the source folder):
  01_MorphableModel.mat  BFM 2009: shapeMU [3N,1], shapePC [3N,K], shapeEV [K,1], tl [F,3] (1-based), texMU.
  Exp_Pca.bin            Guo et al.'s expression basis: int32 D, float32 expMU [3n], float32 expPC [D,3n].
  BFM_exp_idx.mat        trimIndex [n] (1-based): the BFM vertices the expression basis is defined on.
  std_exp.txt            optional: D standard deviations of the expression components (Deep3DFaceRecon).
  68 landmark indices    --keypoints FILE, else a `keypoints` variable in any .mat of the folder
                         (Deep3DFaceRecon's facemodel_info.mat holds them on its 35709-vertex front mesh;
                         BFM_front_idx.mat maps that mesh to the trimmed one); without them the bfm tracker
                         picks the 68 vertices for each clip (see data_utils/bfm/tracker.py).
Output: $EGSTALKER_CACHE/bfm/{bfm_compact.npz, metadata.json}, written atomically (format: bfm/model.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from data_utils.bfm import (
    COMPACT_KEYS,
    COMPACT_NAME,
    FORMAT_VERSION,
    HOW_TO_GET,
    METADATA_NAME,
    NUM_EXP,
    NUM_ID,
    NUM_KEYPOINTS,
    default_cache_dir,
)
from utils.atomic import atomic_dir, atomic_write_json, check_output_dir
from utils.cli import ArgumentParser, UserError, run_cli
from utils.output_policy import OutputKind

TO_DECIMETRES = 1e-5  # BFM 2009 coordinates are micrometres
AXES_FLIP = np.array([1.0, -1.0, -1.0])  # BFM (y up, z to the viewer) -> OpenCV-like (y down, z away)
BFM09_VERTICES = 53490
BFM09_EXP_VERTICES = 53215
FALLBACK_EXP_RMS = 0.01  # decimetres (1 mm) of RMS vertex motion per unit coefficient without std_exp.txt
KEYPOINT_FILES_IN_FRONT_SPACE = ("facemodel_info.mat", "bfm_model_front.mat")
NO_KEYPOINTS = "none given: the bfm tracker picks them for each clip (ICP of the MediaPipe landmark shape)"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass
class Sources:
    """Paths of the input files found in the source folder (None = not present)."""

    morphable: Path
    exp_bin: Path
    exp_idx: Path
    std_exp: Path | None
    front_idx: Path | None
    keypoints: Path | None


BFM_FOLDER = OutputKind("Basel Face Model", "--dest", (METADATA_NAME,))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of download_bfm.sh."""
    p = ArgumentParser(
        prog="download_bfm.sh",
        description="Install the Basel Face Model 2009 (which you must obtain yourself under its licence) "
        "for 'preprocess.sh --tracker bfm'. The files are verified and converted into one compact file under "
        "$EGSTALKER_CACHE/bfm (default ~/.cache/egstalker/bfm). Needed: 01_MorphableModel.mat (University "
        "of Basel), Exp_Pca.bin and BFM_exp_idx.mat (as shipped with Deep3DFaceRecon / ER-NeRF), optionally "
        "std_exp.txt, and the 68 landmark vertex indices (facemodel_info.mat + BFM_front_idx.mat, or "
        "--keypoints; without them the tracker matches them for each clip, less precisely).",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from", dest="source", type=Path, metavar="DIR", help="folder holding the files")
    src.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="download a file or an archive (.zip/.tar[.gz]) of the files; repeat for several files",
    )
    p.add_argument("--check", action="store_true", help="verify the installed model and exit")
    p.add_argument("--force", action="store_true", help="replace an installed model")
    p.add_argument(
        "--keypoints",
        type=Path,
        metavar="FILE",
        help="68 landmark vertex indices: .mat with a 'keypoints' variable (1-based) or .txt/.npy (0-based)",
    )
    p.add_argument(
        "--keypoints_space",
        choices=["auto", "trimmed", "front", "full"],
        default="auto",
        help="mesh the keypoint indices refer to: the 53215-vertex expression mesh (trimmed), "
        "Deep3DFaceRecon's 35709-vertex front mesh (front, needs BFM_front_idx.mat) or the 53490-vertex BFM "
        "(full); auto = front for facemodel_info.mat / BFM_model_front.mat, else trimmed",
    )
    p.add_argument(
        "--sha256",
        action="append",
        default=[],
        metavar="NAME=HEX",
        help="expected SHA-256 of an input file, e.g. 01_MorphableModel.mat=ab12...; repeatable",
    )
    p.add_argument("--dest", type=Path, help="install folder (default $EGSTALKER_CACHE/bfm)")
    return p.parse_args(argv)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find(folder: Path, name: str) -> Path | None:
    """First file under `folder` called `name` (case-insensitive), shallowest first."""
    hits = [p for p in folder.rglob("*") if p.is_file() and p.name.lower() == name.lower()]
    return min(hits, key=lambda p: (len(p.parts), str(p))) if hits else None


def _mat_with_keypoints(folder: Path) -> Path | None:
    """A .mat file under `folder` declaring a `keypoints` variable, preferring Deep3DFaceRecon's names."""
    candidates = sorted(
        folder.rglob("*.mat"), key=lambda p: (p.name.lower() not in KEYPOINT_FILES_IN_FRONT_SPACE, p)
    )
    for path in candidates:
        try:
            if any(name == "keypoints" for name, _, _ in scipy.io.whosmat(path)):
                return path
        except (ValueError, OSError, TypeError):
            continue
    return None


def find_sources(folder: Path, keypoints: Path | None) -> Sources:
    """Locate the input files under `folder`; UserError naming the missing ones."""
    if not folder.is_dir():
        raise UserError(f"'{folder}' is not a folder; {HOW_TO_GET}")
    required = {n: _find(folder, n) for n in ("01_MorphableModel.mat", "Exp_Pca.bin", "BFM_exp_idx.mat")}
    missing = [n for n, p in required.items() if p is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)} in '{folder}'; {HOW_TO_GET}")
    if keypoints is not None and not keypoints.is_file():
        raise UserError(f"keypoints file '{keypoints}' not found; check the --keypoints path")
    return Sources(
        morphable=required["01_MorphableModel.mat"],
        exp_bin=required["Exp_Pca.bin"],
        exp_idx=required["BFM_exp_idx.mat"],
        std_exp=_find(folder, "std_exp.txt"),
        front_idx=_find(folder, "BFM_front_idx.mat"),
        keypoints=keypoints or _mat_with_keypoints(folder),
    )


def _loadmat(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read `keys` (and any of `optional`) from a MATLAB file; UserError if unreadable or a key is missing."""
    try:
        data = scipy.io.loadmat(path, variable_names=list(keys + optional))
    except Exception as err:  # scipy raises many types on truncated or foreign files
        raise UserError(f"'{path}' is not a readable MATLAB file ({err}); download it again") from err
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"'{path}' lacks {', '.join(missing)}; is it the right file? download it again")
    return {k: np.asarray(data[k]) for k in keys + optional if k in data}


def read_morphable_model(path: Path) -> dict[str, np.ndarray]:
    """Verified BFM arrays: shapeMU [N,3], shapePC [N,3,80], shapeEV [K], tl [F,3] 0-based, texMU [N,3]?"""
    data = _loadmat(path, ("shapeMU", "shapePC", "shapeEV", "tl"), optional=("texMU",))
    mu, pc, ev, tl = data["shapeMU"], data["shapePC"], data["shapeEV"].ravel(), data["tl"]
    n3 = mu.size
    if mu.ndim != 2 or mu.shape[1] != 1 or n3 % 3 or pc.shape[0] != n3 or pc.shape[1] != ev.size:
        raise UserError(
            f"'{path}' has inconsistent shapes (shapeMU {mu.shape}, shapePC {pc.shape}, shapeEV {ev.shape}); "
            "download 01_MorphableModel.mat again"
        )
    if ev.size < NUM_ID or tl.ndim != 2 or tl.shape[1] != 3 or tl.min() < 1 or tl.max() > n3 // 3:
        raise UserError(f"'{path}' needs >= {NUM_ID} shape components and 1-based triangles 'tl' [F,3]")
    n = n3 // 3
    tex = data["texMU"].reshape(-1, 3) if "texMU" in data else None
    return {
        "shapeMU": mu.reshape(n, 3).astype(np.float64),
        "shapePC": pc[:, :NUM_ID].reshape(n, 3, NUM_ID).astype(np.float64),
        "shapeEV": ev.astype(np.float64),
        "tl": tl.astype(np.int64) - 1,
        "texMU": None if tex is None or tex.shape[0] != n else tex.astype(np.float64),
    }


def read_index(path: Path, key: str, upper: int) -> np.ndarray:
    """1-based index vector `key` of a .mat file -> unique 0-based int64 [n] below `upper`."""
    idx = _loadmat(path, (key,))[key].ravel().astype(np.int64) - 1
    if idx.size == 0 or idx.min() < 0 or idx.max() >= upper or np.unique(idx).size != idx.size:
        raise UserError(f"'{path}': '{key}' must be unique 1-based indices up to {upper}; download it again")
    return idx


def read_exp_basis(path: Path, n: int) -> np.ndarray:
    """Expression components [D,n,3] from Exp_Pca.bin on `n` vertices; UserError if the size is off."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = np.fromfile(f, dtype="<i4", count=1)
        dim = int(head[0]) if head.size else -1
        expected = 4 + 4 * 3 * n * (1 + dim)
        if dim < NUM_EXP or size != expected:
            raise UserError(
                f"'{path}' is truncated or corrupt ({size} bytes, expected {expected} for {dim} components "
                f"on {n} vertices); download Exp_Pca.bin again"
            )
        np.fromfile(f, dtype="<f4", count=3 * n)  # expMU: the mean expression, unused like Deep3DFaceRecon
        pc = np.fromfile(f, dtype="<f4", count=3 * n * dim)
    if not np.isfinite(pc).all():
        raise UserError(f"'{path}' holds non-finite values; download Exp_Pca.bin again")
    return pc.reshape(dim, n, 3).astype(np.float64)


def read_std_exp(path: Path, dim: int) -> np.ndarray:
    """Positive standard deviations [dim] of the expression components from std_exp.txt."""
    try:
        std = np.loadtxt(path, dtype=np.float64).ravel()
    except ValueError as err:
        raise UserError(f"'{path}' is not a list of numbers ({err}); download std_exp.txt again") from err
    if std.size != dim or not (std > 0).all():
        raise UserError(
            f"'{path}' must hold {dim} positive numbers, not {std.size}; download std_exp.txt again"
        )
    return std


def read_keypoints(src: Sources, space: str, trim: np.ndarray, n_full: int) -> tuple[np.ndarray, str]:
    """The 68 landmark indices on the trimmed mesh [68] ([0] if none given) and where they came from."""
    if src.keypoints is None:
        return np.zeros(0, dtype=np.int64), NO_KEYPOINTS
    path = src.keypoints
    if path.suffix.lower() == ".mat":
        kp = _loadmat(path, ("keypoints",))["keypoints"].ravel().astype(np.int64) - 1
    else:
        try:
            kp = (
                (np.load(path) if path.suffix.lower() == ".npy" else np.loadtxt(path))
                .ravel()
                .astype(np.int64)
            )
        except ValueError as err:
            raise UserError(f"'{path}' is not a list of indices ({err}); check --keypoints") from err
    if space == "auto":
        space = "front" if path.name.lower() in KEYPOINT_FILES_IN_FRONT_SPACE else "trimmed"
    if kp.size != NUM_KEYPOINTS or kp.min() < 0:
        raise UserError(f"'{path}' must hold {NUM_KEYPOINTS} non-negative landmark indices, not {kp.size}")
    if space == "front":
        if src.front_idx is None:
            raise UserError(
                f"'{path}' indexes the front mesh; add BFM_front_idx.mat or set --keypoints_space"
            )
        front = read_index(src.front_idx, "idx", trim.size)
        kp = front[_checked(kp, front.size, path, space)]
    elif space == "full":
        kp = _inverse_index(trim, n_full)[_checked(kp, n_full, path, space)]
        if (kp < 0).any():
            raise UserError(f"'{path}': some landmarks lie outside the trimmed mesh; check --keypoints_space")
    kp = _checked(kp, trim.size, path, space)
    return kp, f"{path.name} ({space} mesh)"


def _inverse_index(trim: np.ndarray, n_full: int) -> np.ndarray:
    """Map [n_full] from full-mesh vertex to trimmed-mesh vertex (-1 where trimmed away)."""
    inverse = np.full(n_full, -1)
    inverse[trim] = np.arange(trim.size)
    return inverse


def _checked(idx: np.ndarray, upper: int, path: Path, space: str) -> np.ndarray:
    """`idx` unchanged if all below `upper`, else UserError naming the keypoints file and space."""
    if idx.max() >= upper:
        raise UserError(f"'{path}': index {idx.max()} is beyond the {space} mesh ({upper} vertices)")
    return idx


def convert(src: Sources, keypoint_space: str) -> tuple[dict[str, np.ndarray], dict]:
    """Verified sources -> (compact arrays, metadata): trimmed, decimetres, OpenCV-like axes, centred."""
    bfm = read_morphable_model(src.morphable)
    n_full = bfm["shapeMU"].shape[0]
    trim = read_index(src.exp_idx, "trimIndex", n_full)
    exp_pc = read_exp_basis(src.exp_bin, trim.size)
    if src.std_exp is not None:
        std = read_std_exp(src.std_exp, exp_pc.shape[0])[:NUM_EXP]
        exp_basis = exp_pc[:NUM_EXP] * std[:, None, None] * TO_DECIMETRES
        exp_scale = "Exp_Pca.bin x std_exp.txt (unit-variance coefficients)"
    else:
        rms = np.sqrt((exp_pc[:NUM_EXP] ** 2).sum(-1).mean(-1))
        exp_basis = exp_pc[:NUM_EXP] * (FALLBACK_EXP_RMS / np.maximum(rms, 1e-12))[:, None, None]
        exp_scale = f"no std_exp.txt: each component scaled to {FALLBACK_EXP_RMS} dm RMS vertex motion"
    keypoints, keypoints_source = read_keypoints(src, keypoint_space, trim, n_full)
    mean = bfm["shapeMU"][trim] * TO_DECIMETRES * AXES_FLIP
    centre = mean.mean(axis=0)
    id_basis = (bfm["shapePC"][trim] * bfm["shapeEV"][:NUM_ID]).transpose(2, 0, 1) * TO_DECIMETRES * AXES_FLIP
    tri = _inverse_index(trim, n_full)[bfm["tl"]]
    tri = tri[(tri >= 0).all(axis=1)]
    tex = bfm["texMU"]
    tex_mean = np.full((trim.size, 3), 0.5) if tex is None else np.clip(tex[trim] / 255.0, 0.0, 1.0)
    arrays = {
        "mean_shape": (mean - centre).astype(np.float32),
        "id_basis": id_basis.astype(np.float32),
        "exp_basis": (exp_basis * AXES_FLIP).astype(np.float32),
        "triangles": tri.astype(np.int32),
        "keypoints": keypoints.astype(np.int64),
        "tex_mean": tex_mean.astype(np.float32),
    }
    metadata = {
        "format_version": FORMAT_VERSION,
        "unit": "decimetre (BFM micrometres x 1e-5)",
        "axes": "x image right, y down, z away from the viewer (OpenCV-like, as the default tracker)",
        "centred_on": "mean of the trimmed mean shape",
        "num_vertices": int(trim.size),
        "num_triangles": int(tri.shape[0]),
        "num_id": NUM_ID,
        "num_exp": NUM_EXP,
        "id_scale": "shapePC x shapeEV (unit-variance coefficients)",
        "exp_scale": exp_scale,
        "keypoints_source": keypoints_source,
        "texture": "texMU / 255" if tex is not None else "none in the source: grey",
        "standard_bfm09": bool(n_full == BFM09_VERTICES and trim.size == BFM09_EXP_VERTICES),
    }
    return arrays, metadata


def _hash_sources(src: Sources, expected: dict[str, str]) -> dict[str, dict]:
    """Size and SHA-256 of each input file; UserError if one differs from an expected --sha256."""
    paths = [
        p for p in (src.morphable, src.exp_bin, src.exp_idx, src.std_exp, src.front_idx, src.keypoints) if p
    ]
    unknown = set(expected) - {p.name.lower() for p in paths}
    if unknown:
        raise UserError(f"--sha256 names {', '.join(sorted(unknown))}, which is not among the input files")
    out = {}
    for path in paths:
        digest = sha256_of(path)
        want = expected.get(path.name.lower())
        if want is not None and want != digest:
            raise UserError(f"'{path}' has SHA-256 {digest}, expected {want}; download it again")
        out[path.name] = {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest}
    return out


def _parse_sha256(items: list[str]) -> dict[str, str]:
    """--sha256 NAME=HEX items -> {lower-case name: lower-case hex}."""
    out = {}
    for item in items:
        name, sep, digest = item.partition("=")
        if not sep or len(digest) != 64:
            raise UserError(f"--sha256 '{item}' must look like NAME=<64 hex digits>")
        out[name.lower()] = digest.lower()
    return out


def install(
    folder: Path,
    dest: Path,
    force: bool = False,
    keypoints: Path | None = None,
    keypoint_space: str = "auto",
    expected_sha256: dict[str, str] | None = None,
) -> dict:
    """Verify the files under `folder`, convert them and write `dest`/{bfm_compact.npz, metadata.json}."""
    check_output_dir(dest, force, BFM_FOLDER)
    src = find_sources(folder, keypoints)
    sources = _hash_sources(src, expected_sha256 or {})
    arrays, metadata = convert(src, keypoint_space)
    with atomic_dir(dest, force=force, kind=BFM_FOLDER, inputs=(folder,)) as tmp:
        np.savez(tmp / COMPACT_NAME, **arrays)
        metadata.update(
            sources=sources,
            compact_sha256=sha256_of(tmp / COMPACT_NAME),
            installed_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        atomic_write_json(tmp / METADATA_NAME, metadata)
    return metadata


def check(dest: Path) -> dict:
    """Verify an installed model (hash, arrays, shapes); return its metadata or raise UserError."""
    path, meta_path = dest / COMPACT_NAME, dest / METADATA_NAME
    if not path.is_file() or not meta_path.is_file():
        raise UserError(f"{HOW_TO_GET} (looked in '{dest}')")
    redo = "reinstall with ./download_bfm.sh --force --from DIR"
    try:
        meta = json.loads(meta_path.read_text())
        if sha256_of(path) != meta.get("compact_sha256"):
            raise UserError(f"'{path}' was modified or damaged; {redo}")
        with np.load(path) as data:
            shapes = {k: data[k].shape for k in COMPACT_KEYS}
            limits = (int(data["triangles"].max()), int(data["keypoints"].max(initial=0)))
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"'{dest}' is unreadable ({err}); {redo}") from err
    v = shapes["mean_shape"][0]
    expected = {
        "mean_shape": (v, 3),
        "id_basis": (NUM_ID, v, 3),
        "exp_basis": (NUM_EXP, v, 3),
        "tex_mean": (v, 3),
    }
    bad = any(shapes[k] != s for k, s in expected.items()) or shapes["keypoints"] not in (
        (NUM_KEYPOINTS,),
        (0,),
    )
    if bad or max(limits) >= v or meta.get("num_vertices") != v:
        raise UserError(f"'{dest}' holds arrays of unexpected shapes; {redo}")
    return meta


def download(urls: list[str], folder: Path) -> None:
    """Download each URL into `folder` (tqdm progress), extracting archives; UserError when it fails."""
    for url in urls:
        name = Path(urllib.parse.urlparse(url).path).name or "download"
        path = folder / name
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr) as bar:
                    for block in iter(lambda resp=resp: resp.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise UserError(f"{HOW_TO_GET}; downloading '{url}' failed ({err})") from err
        if name.lower().endswith(ARCHIVE_SUFFIXES):
            _extract(path, folder)


def _extract(path: Path, folder: Path) -> None:
    """Unpack a .zip or .tar archive into `folder` and delete it."""
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                zf.extractall(folder)
        else:
            with tarfile.open(path) as tf:
                tf.extractall(folder, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as err:
        raise UserError(f"'{path.name}' is not a readable archive ({err}); download it again") from err
    path.unlink()


def main(argv: list[str] | None = None) -> int:
    """Entry point of download_bfm.sh: --check, --from DIR or --url URL."""
    args = parse_args(argv)
    dest = args.dest or default_cache_dir()
    if args.check:
        meta = check(dest)
        print(
            f"ok: Basel Face Model in '{dest}' ({meta['num_vertices']} vertices, {meta['keypoints_source']})"
        )
        return 0
    if args.source is None and not args.url:
        raise UserError(HOW_TO_GET)
    expected = _parse_sha256(args.sha256)
    if args.url:
        check_output_dir(dest, args.force, BFM_FOLDER)
        tmp = Path(tempfile.mkdtemp(prefix="egstalker-bfm-"))
        try:
            download(args.url, tmp)
            meta = install(tmp, dest, args.force, args.keypoints, args.keypoints_space, expected)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        meta = install(args.source, dest, args.force, args.keypoints, args.keypoints_space, expected)
    print(
        f"installed the Basel Face Model in '{dest}': {meta['num_vertices']} vertices, "
        f"{meta['num_triangles']} triangles, landmarks: {meta['keypoints_source']}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
