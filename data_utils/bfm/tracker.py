"""The "bfm" tracker: fit the Basel Face Model to the 68 iBUG landmarks of a clip (shared identity and focal,
per-frame expression and pose), then give each of the 478 MediaPipe points a BFM vertex.

The 68 landmark vertices come from the install (Deep3DFaceRecon's list); when it had none, they are picked for
each clip: the default tracker's 478-point shape is aligned to the mean mesh by a similarity ICP (multi-start,
see `icp_keypoints`) and each iBUG point takes its nearest vertex.

The 478-point head-space shape: for each MediaPipe point, the vertex of the fitted mesh whose projections over
(up to 48) frames lie closest to that point's observed track, penalising frames where the vertex faces away
from the camera; the shape is that vertex on the neutral (zero-expression) fitted identity mesh.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from data_utils import landmark_indices as li
from data_utils.bfm import NUM_EXP, NUM_ID
from data_utils.bfm.model import BFMModel
from data_utils.smoothing import fill_gaps
from data_utils.tracker_config import BFMFitConfig
from data_utils.tracking import (
    Adam,
    LandmarkFitTracker,
    TrackResult,
    accel,
    pose,
    pseudo_huber,
    scatter,
    umeyama,
)
from utils.cli import UserError

MESH_POINTS = 468  # MediaPipe's face-surface points; 468..477 are the irises
PER_FRAME = ("aa", "uv", "log_d", "exp")  # fit parameters with one row per frame
MATCH_FRAMES = 48
MATCH_CHUNK = 8192
BACKFACE_PENALTY = 0.05  # x image size, squared: px^2 added per frame a vertex faces away from the camera


@dataclass
class BFMTrackResult(TrackResult):
    """TrackResult plus BFM coefficients, neutral mesh [V,3] and the vertex of each MediaPipe point [478]."""

    id_coeff: np.ndarray  # [80]
    exp_coeff: np.ndarray  # [T,64]
    vertex_idx: np.ndarray  # [478] BFM vertex per MediaPipe point
    vertices: np.ndarray  # [V,3] neutral fitted mesh in head space
    keypoint_idx: np.ndarray  # [68] BFM vertex per iBUG landmark

    def to_dict(self) -> dict:
        """`track_params.pt` dict plus bfm_id_coeff, bfm_exp_coeff, bfm_vertex_idx/vertices/keypoint_idx."""
        out = super().to_dict()
        out.update(
            bfm_id_coeff=torch.as_tensor(self.id_coeff, dtype=torch.float32),
            bfm_exp_coeff=torch.as_tensor(self.exp_coeff, dtype=torch.float32),
            bfm_vertex_idx=torch.as_tensor(self.vertex_idx, dtype=torch.long),
            bfm_vertices=torch.as_tensor(self.vertices, dtype=torch.float32),
            bfm_keypoint_idx=torch.as_tensor(self.keypoint_idx, dtype=torch.long),
        )
        return out


class BFMTracker:
    """Batch fit over all frames of shared identity [80] + focal and per-frame expression [64] and pose."""

    name = "bfm"
    version = "1.0"

    def __init__(
        self,
        cfg: BFMFitConfig | None = None,
        device: str = "cpu",
        cache_dir: Path | str | None = None,
        **changes: Any,
    ) -> None:
        """Load the installed BFM (UserError if absent) onto `device`; take the settings `cfg` (None = the
        defaults) with the fields `changes` replaced, e.g. steps=100."""
        self.device = torch.device(device)
        self.model = BFMModel.load(cache_dir, self.device)
        self.cfg = replace(cfg or BFMFitConfig(), **changes)

    def fit(
        self,
        lms2d: np.ndarray,
        lms_z: np.ndarray | None,
        image_size: int,
        fps: float,
        progress: bool = True,
    ) -> BFMTrackResult:
        """Fit landmarks [T,478,2] (pixels, NaN = missing); depths `lms_z` [T,478] only feed the ICP."""
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # small tensors: extra threads only add contention
        try:
            return self._fit(lms2d, lms_z, image_size, fps, progress)
        finally:
            torch.set_num_threads(threads)

    def _fit(
        self, lms2d: np.ndarray, lms_z: np.ndarray | None, image_size: int, fps: float, progress: bool
    ) -> BFMTrackResult:
        """Body of `fit`."""
        obs_all = np.asarray(lms2d, dtype=np.float64)
        obs = obs_all[:, li.MP_TO_IBUG68]
        valid = ~np.isnan(obs).any(axis=(1, 2))
        if not valid.any():
            raise UserError("no face landmarks to track; use a clip where the face is visible")
        half = image_size / 2.0
        kp_idx = self.model.keypoint_idx
        if kp_idx.numel() == 0:
            shape = LandmarkFitTracker().fit(lms2d, lms_z, image_size, fps, progress=progress).shape
            mesh = self.model.mean_shape.cpu().double().numpy()
            kp_idx = torch.as_tensor(icp_keypoints(shape, mesh), device=self.device)
        kp_model = self.model.select(kp_idx)
        params = self._init_params(obs, valid, half, kp_model)
        self._optimise(params, obs, valid, half, kp_model, progress)
        return self._result(params, obs_all, valid, half, kp_model, kp_idx)

    def _init_params(
        self, obs: np.ndarray, valid: np.ndarray, half: float, kp_model: BFMModel
    ) -> dict[str, torch.Tensor]:
        """Initial parameters: per-frame PnP poses of the mean face, zero coefficients, focal_init."""
        T = obs.shape[0]
        focal = self.cfg.focal_init * 2 * half
        kp0 = kp_model.mean_shape.cpu().double().numpy()
        K = np.array([[focal, 0, half], [0, focal, half], [0, 0, 1.0]])
        poses = []
        for frame in obs[valid]:
            _, rvec, tvec = cv2.solvePnP(kp0, frame, K, None, flags=cv2.SOLVEPNP_EPNP)
            rvec, tvec = cv2.solvePnPRefineLM(kp0, frame, K, None, rvec, tvec)
            poses.append(np.concatenate([rvec.ravel(), tvec.ravel()]))
        poses = fill_gaps(scatter(np.stack(poses), valid, T), max_gap=T)[0]
        depth = np.maximum(poses[:, 5], 1e-3)
        dt, dev = torch.float32, self.device
        params = {
            "aa": torch.tensor(poses[:, :3], dtype=dt, device=dev),
            "uv": torch.tensor(focal * poses[:, 3:5] / depth[:, None], dtype=dt, device=dev),
            "log_d": torch.tensor(np.log(depth / focal), dtype=dt, device=dev),
            "log_f": torch.tensor(np.log(focal), dtype=dt, device=dev),
            "id": torch.zeros(NUM_ID, dtype=dt, device=dev),
            "exp": torch.zeros(T, NUM_EXP, dtype=dt, device=dev),
        }
        for p in params.values():
            p.requires_grad_(True)
        return params

    def _optimise(
        self, params, obs: np.ndarray, valid: np.ndarray, half: float, kp_model: BFMModel, progress: bool
    ) -> None:
        """Adam: a rigid stage (pose + focal) then all parameters, with priors and temporal smoothness."""
        dt, dev = torch.float32, self.device
        target = torch.tensor(np.nan_to_num(obs), dtype=dt, device=dev)
        weight = torch.tensor(valid, dtype=dt, device=dev)
        T = obs.shape[0]
        log_f0 = float(params["log_f"].detach())
        cfg = self.cfg
        px_per_unit = float(torch.exp(-params["log_d"].detach()).median())

        def second_diff_sq(x: torch.Tensor) -> torch.Tensor:
            return (accel(x) ** 2).reshape(T - 2, -1).sum(-1).mean()

        def loss_fn() -> torch.Tensor:
            dist2 = ((_keypoints_2d(params, half, kp_model) - target) ** 2).sum(-1)
            robust = pseudo_huber(dist2, cfg.huber_px)
            loss = (robust.mean(-1) * weight).sum() / weight.sum()
            loss = (
                loss + cfg.w_id * (params["id"] ** 2).sum() + cfg.w_exp * (params["exp"] ** 2).sum(-1).mean()
            )
            loss = loss + cfg.w_focal * (params["log_f"] - log_f0) ** 2
            if T >= 3:
                rigid = px_per_unit**2 * (second_diff_sq(params["aa"]) + second_diff_sq(params["log_d"]))
                rigid = rigid + second_diff_sq(params["uv"])
                loss = loss + cfg.w_smooth * rigid + cfg.w_exp_smooth * second_diff_sq(params["exp"])
            return loss

        lrs = {"aa": cfg.lr_rotation, "uv": cfg.lr_position, "log_d": cfg.lr_depth, "log_f": cfg.lr_focal}
        lrs |= {"id": cfg.lr_id, "exp": cfg.lr_exp}
        rigid_keys = ("aa", "uv", "log_d", "log_f")
        rigid_steps = int(cfg.steps * cfg.rigid_share)
        stages = [(rigid_keys, rigid_steps), (tuple(lrs), cfg.steps - rigid_steps)]
        bar = tqdm(total=cfg.steps, desc="bfm tracking", unit="step", disable=not progress, file=sys.stderr)
        for keys, steps in stages:
            adam = Adam({k: params[k] for k in keys}, {k: lrs[k] for k in keys})
            for step in range(steps):
                loss = loss_fn()
                grads = torch.autograd.grad(loss, [params[k] for k in keys])
                adam.step(grads, lr_scale=0.5 * (1 + np.cos(np.pi * step / steps)) + 0.01)
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()

    @torch.no_grad()
    def _result(
        self, params, obs_all: np.ndarray, valid: np.ndarray, half: float, kp_model: BFMModel, kp_idx
    ) -> BFMTrackResult:
        """TrackResult from the optimised parameters, with the 478-point shape from vertex matching."""
        pred = _keypoints_2d(params, half, kp_model).cpu().double().numpy()
        err = np.linalg.norm(pred - obs_all[:, li.MP_TO_IBUG68], axis=-1).mean(axis=1)
        err[~valid] = np.nan
        rot, trans, focal = (x.cpu().double() for x in pose(params))
        neutral = self.model.vertices(params["id"][None], torch.zeros(1, NUM_EXP, device=self.device))[0]
        vertex_idx = self._match_vertices(params, obs_all, half, neutral)
        shape = neutral[vertex_idx].cpu().double().numpy()
        rot_np = rot.numpy()
        return BFMTrackResult(
            R=rot_np,
            t=trans.numpy(),
            euler=Rotation.from_matrix(rot_np).as_euler("xyz"),
            focal=float(focal),
            shape=shape,
            lms2d=obs_all,
            reproj_err=err,
            tracker=self.name,
            tracker_version=self.version,
            id_coeff=params["id"].cpu().numpy(),
            exp_coeff=params["exp"].cpu().numpy(),
            vertex_idx=vertex_idx.cpu().numpy(),
            vertices=neutral.cpu().numpy(),
            keypoint_idx=kp_idx.cpu().numpy(),
        )

    def _match_vertices(
        self, params, obs_all: np.ndarray, half: float, neutral: torch.Tensor
    ) -> torch.Tensor:
        """Vertex index [478] whose projections best follow each MediaPipe point's 2D track."""
        complete = np.flatnonzero(~np.isnan(obs_all).any(axis=(1, 2)))
        frames = complete[
            np.linspace(0, len(complete) - 1, min(MATCH_FRAMES, len(complete))).round().astype(int)
        ]
        sel = torch.as_tensor(frames, device=self.device)
        sub = {k: (v[sel] if k in PER_FRAME else v) for k, v in params.items()}
        rot, trans, _ = pose(sub)
        normals = _vertex_normals(neutral, self.model.triangles)
        obs = torch.as_tensor(obs_all[frames], dtype=torch.float32, device=self.device)  # [S,478,2]
        obs_flat = obs.permute(1, 0, 2).reshape(obs.shape[1], -1)  # [478, S*2]
        penalty = BACKFACE_PENALTY * (2 * half) ** 2
        best_cost = torch.full((obs.shape[1],), float("inf"), device=self.device)
        best_idx = torch.zeros(obs.shape[1], dtype=torch.long, device=self.device)
        for start in range(0, self.model.num_vertices, MATCH_CHUNK):
            idx = torch.arange(start, min(start + MATCH_CHUNK, self.model.num_vertices), device=self.device)
            n = len(frames)
            verts = self.model.vertices(params["id"].expand(n, -1), sub["exp"], idx)  # [S,C,3]
            proj = _project_points(sub, verts, half)  # [S,C,2]
            proj_flat = proj.permute(1, 0, 2).reshape(len(idx), -1)  # [C, S*2]
            cost = (proj_flat**2).sum(-1)[None] - 2 * obs_flat @ proj_flat.T  # [478, C] (+ const per row)
            cam = torch.einsum("sij,cj->sci", rot, neutral[idx]) + trans[:, None]
            facing_away = (torch.einsum("sij,cj->sci", rot, normals[idx]) * cam).sum(-1) > 0  # [S,C]
            cost = cost + penalty * facing_away.sum(0)[None]
            value, arg = cost.min(dim=1)
            better = value < best_cost
            best_cost = torch.where(better, value, best_cost)
            best_idx = torch.where(better, idx[arg], best_idx)
        return best_idx


def icp_keypoints(shape: np.ndarray, mesh: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Vertices [68] of `mesh` [V,3] nearest the iBUG points of a MediaPipe shape [478,3] after ICP.

    The shape's frame need not match the mesh's: ICP starts from the 24 axis-aligned rotations (centroids
    together, scale from the spread) and keeps the alignment with the smallest trimmed residual.
    """
    tree = cKDTree(mesh)
    src = shape[:MESH_POINTS]  # the iris points float in front of the eyes
    best = (np.inf, 1.0, np.eye(3), np.zeros(3))
    for start in Rotation.create_group("O").as_matrix():
        scale = float(np.sqrt(mesh.var(0).sum() / src.var(0).sum()))
        rot, shift = start, mesh.mean(0) - scale * start @ src.mean(0)
        for _ in range(iterations):
            dist, idx = tree.query(scale * src @ rot.T + shift)
            keep = dist <= np.quantile(dist, 0.9)
            scale, rot, shift = umeyama(src[keep], mesh[idx[keep]])
        dist = tree.query(scale * src @ rot.T + shift)[0]
        residual = float(np.mean(np.sort(dist)[: int(0.9 * len(dist))] ** 2)) / scale**2
        if residual < best[0]:
            best = (residual, scale, rot, shift)
    _, scale, rot, shift = best
    return tree.query(scale * shape[li.MP_TO_IBUG68] @ rot.T + shift)[1]


def _keypoints_2d(params: dict[str, torch.Tensor], half: float, kp_model: BFMModel) -> torch.Tensor:
    """Projected keypoints [T,68,2] of the keypoint sub-model under the fit parameters `params`."""
    T = params["exp"].shape[0]
    return _project_points(params, kp_model.vertices(params["id"].expand(T, -1), params["exp"]), half)


def _project_points(params: dict[str, torch.Tensor], pts: torch.Tensor, half: float) -> torch.Tensor:
    """Pixel projections [T,N,2] of per-frame head-space points [T,N,3] under the poses/focal of `params`."""
    rot, trans, focal = pose(params)
    cam = torch.einsum("tij,tnj->tni", rot, pts) + trans[:, None, :]
    return focal * cam[..., :2] / cam[..., 2:3] + half


def _vertex_normals(verts: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals [V,3] of a mesh, oriented so that on average they face the viewer (-z)."""
    v0, v1, v2 = (verts[triangles[:, i]] for i in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)
    normals = torch.zeros_like(verts).index_add_(0, triangles.reshape(-1), face_n.repeat_interleave(3, dim=0))
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return normals if normals[:, 2].mean() < 0 else -normals
