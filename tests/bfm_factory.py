"""A tiny synthetic Basel Face Model in the real file formats, for the BFM installer and tracker tests.

Written files: 01_MorphableModel.mat (shapeMU/shapePC/shapeEV/texMU/texPC/texEV/tl, micrometres, y up, z to
the viewer), Exp_Pca.bin (int32 D, float32 expMU [3n], float32 expPC [D,3n]), BFM_exp_idx.mat (trimIndex,
1-based), std_exp.txt, and the landmarks either as Deep3DFaceRecon's facemodel_info.mat (keypoints, 1-based on
the front mesh) + BFM_front_idx.mat (idx, 1-based on the trimmed mesh) or as a 0-based keypoints.txt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from data_utils import landmark_indices as li

GRID_X, GRID_Y = 32, 36
NUM_SHAPE_PC = 199
NUM_EXP_PC = 79
SEMANTIC_POINTS = {li.NOSE_TIP: (0.0, 0.0), 234: (-60000.0, 0.0), 454: (60000.0, 0.0)}  # BFM x, y (um)


@dataclass
class TinyBFM:
    """Where the files went and the ground truth: trimmed keypoints [68] and MediaPipe vertices [478]."""

    folder: Path
    keypoints_txt: Path | None
    num_full: int
    num_trimmed: int
    trim: np.ndarray  # [n] full-mesh vertex of each trimmed-mesh vertex (0-based trimIndex)
    keypoints: np.ndarray  # [68] indices on the trimmed mesh
    mp_vertices: np.ndarray  # [478] trimmed-mesh vertex of each MediaPipe point


def _rigid_fields(verts: np.ndarray) -> np.ndarray:
    """Displacement fields [3N,7] of translation, infinitesimal rotation and scaling of verts [N,3]."""
    c = verts - verts.mean(axis=0)
    fields = [np.tile(e, (len(c), 1)) for e in np.eye(3)]
    fields += [np.cross(e, c) for e in np.eye(3)] + [c]
    return np.stack([f.ravel() for f in fields], axis=1)


def _smooth_basis(
    verts: np.ndarray, count: int, mask: np.ndarray, anchors: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """`count` orthonormal smooth displacement fields [3N,count] (xyz interleaved) weighted by mask [N].

    The fields hold no rigid motion of the anchor vertices (the landmarks), so that the head pose of a
    deformed face is well defined (the real BFM is Procrustes-aligned for the same reason).
    """
    xy = verts[:, :2]
    centres = xy[rng.choice(len(xy), 90, replace=False)]
    phi = np.exp(-((xy[:, None] - centres[None]) ** 2).sum(-1) / (2 * 35000.0**2))  # [N,90]
    fields = np.einsum("nr,rck->nck", phi, rng.normal(size=(90, 3, count))) * mask[:, None, None]
    fields = fields.reshape(-1, count)
    rows = (3 * anchors[:, None] + np.arange(3)).ravel()
    rigid = _rigid_fields(verts)
    motion = np.linalg.lstsq(rigid[rows], fields[rows], rcond=None)[0]
    q, _ = np.linalg.qr(fields - rigid @ motion)
    return q


def _grid_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Face-like mean shape [N,3] (micrometres, BFM axes) and 0-based grid triangles [F,3]."""
    x, y = np.meshgrid(np.linspace(-75000, 75000, GRID_X), np.linspace(-95000, 95000, GRID_Y))
    r2 = np.clip((x / 85000) ** 2 + (y / 110000) ** 2, 0.0, 0.97)
    bump = lambda cx, cy, sx, sy: np.exp(-((x - cx) ** 2) / (2 * sx**2) - (y - cy) ** 2 / (2 * sy**2))
    features = (
        30000 * bump(0, 0, 9000, 20000)  # nose
        - 12000 * (bump(-32000, 25000, 12000, 8000) + bump(32000, 25000, 12000, 8000))  # eye sockets
        + 8000 * (bump(-30000, 42000, 16000, 5000) + bump(30000, 42000, 16000, 5000))  # brows
        + 10000 * bump(0, -75000, 20000, 10000)  # chin
        + 5000 * bump(0, -45000, 25000, 6000)  # lips
    )
    z = 70000 * np.sqrt(1 - r2) + features
    verts = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    i = np.arange(GRID_Y - 1)[:, None] * GRID_X + np.arange(GRID_X - 1)[None]
    i = i.ravel()
    tris = np.concatenate(
        [np.stack([i, i + 1, i + GRID_X], 1), np.stack([i + 1, i + GRID_X + 1, i + GRID_X], 1)]
    )
    return verts, tris


def make_tiny_bfm(folder: Path, seed: int = 0, deep3d_keypoints: bool = True) -> TinyBFM:
    """Write a tiny morphable model's files into `folder` and return the ground-truth correspondences."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    verts, tris = _grid_mesh()
    n_full = len(verts)
    trim = np.flatnonzero(np.arange(n_full) % 13 != 5)
    n = len(trim)
    tv = verts[trim]
    interior = np.flatnonzero((np.abs(tv[:, 0]) < 62000) & (np.abs(tv[:, 1]) < 80000))
    mp_vertices = np.full(li.NUM_LANDMARKS, -1, dtype=np.int64)
    for mp_index, (x, y) in SEMANTIC_POINTS.items():  # the points the default tracker's heuristics use
        mp_vertices[mp_index] = interior[np.argmin(np.hypot(tv[interior, 0] - x, tv[interior, 1] - y))]
    free = np.setdiff1d(interior, mp_vertices)
    mp_vertices[mp_vertices < 0] = rng.choice(free, int((mp_vertices < 0).sum()), replace=False)
    keypoints = mp_vertices[li.MP_TO_IBUG68]

    shape_pc = _smooth_basis(verts, NUM_SHAPE_PC, np.ones(n_full), trim[keypoints], rng)
    shape_ev = 3000.0 * np.sqrt(3 * n_full) * 0.93 ** np.arange(NUM_SHAPE_PC)
    tex_pc = _smooth_basis(verts, NUM_SHAPE_PC, np.ones(n_full), trim[keypoints], rng)
    scipy.io.savemat(
        folder / "01_MorphableModel.mat",
        {
            "shapeMU": verts.reshape(-1, 1).astype(np.float32),
            "shapePC": shape_pc.astype(np.float32),
            "shapeEV": shape_ev[:, None].astype(np.float32),
            "texMU": np.full((3 * n_full, 1), 150.0, np.float32),
            "texPC": tex_pc.astype(np.float32),
            "texEV": np.full((NUM_SHAPE_PC, 1), 10.0, np.float32),
            "tl": (tris + 1).astype(np.float64),
        },
    )
    scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (trim + 1)[:, None].astype(np.float64)})
    mouth = np.exp(-(((tv[:, 1] + 45000) / 25000.0) ** 2))
    exp_pc = _smooth_basis(tv, NUM_EXP_PC, 0.05 + mouth, keypoints, rng)  # [3n, D], mostly the mouth
    with open(folder / "Exp_Pca.bin", "wb") as f:
        np.array([NUM_EXP_PC], dtype="<i4").tofile(f)
        np.zeros(3 * n, dtype="<f4").tofile(f)
        exp_pc.T.astype("<f4").tofile(f)
    np.savetxt(folder / "std_exp.txt", 2000.0 * np.sqrt(3 * n) * 0.9 ** np.arange(NUM_EXP_PC))
    keypoints_txt = None
    if deep3d_keypoints:
        front = np.sort(interior)
        scipy.io.savemat(folder / "BFM_front_idx.mat", {"idx": (front + 1)[:, None].astype(np.float64)})
        front_kp = np.searchsorted(front, keypoints)
        scipy.io.savemat(
            folder / "facemodel_info.mat", {"keypoints": (front_kp + 1)[None].astype(np.float64)}
        )
    else:
        keypoints_txt = folder.parent / f"{folder.name}_keypoints.txt"
        np.savetxt(keypoints_txt, keypoints, fmt="%d")
    return TinyBFM(folder, keypoints_txt, n_full, n, trim, keypoints, mp_vertices)
