"""Head tracking: fit one 3D landmark shape, per-frame rigid poses and one focal length to 2D landmarks."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from data_utils import landmark_indices as li
from data_utils.smoothing import fill_gaps
from data_utils.tracker_config import LandmarkFitConfig
from utils.cli import UserError
from utils.rigid import so3_exp

HEAD_WIDTH = 1.5  # head-space units spanned by the landmarks from cheek to cheek


@dataclass
class TrackResult:
    """Tracked head poses (OpenCV camera, head->camera), shared focal length and subject landmark shape."""

    R: np.ndarray  # [T,3,3] head->camera rotation
    t: np.ndarray  # [T,3] head->camera translation
    euler: np.ndarray  # [T,3] rad, scipy extrinsic "xyz" angles of R
    focal: float  # pixels; principal point at the image centre
    shape: np.ndarray  # [478,3] landmarks in head space
    lms2d: np.ndarray  # [T,478,2] the 2D landmarks that were fitted
    reproj_err: np.ndarray  # [T] mean reprojection error per frame (px)
    tracker: str
    tracker_version: str
    # Optional low-rank expression model: frame t's landmarks = shape + sum_k expr_coeffs[t,k] * expr_basis[k]
    reproj_err_rigid: np.ndarray | None = field(default=None, kw_only=True)  # [T] px of `shape` alone
    expr_basis: np.ndarray | None = field(default=None, kw_only=True)  # [K,478,3] head space
    expr_coeffs: np.ndarray | None = field(default=None, kw_only=True)  # [T,K]

    def to_dict(self) -> dict:
        """Return the `track_params.pt` dict (float32 tensors, `trans` = `t`, expression fields if set)."""
        tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
        out = {
            "euler": tensor(self.euler),
            "trans": tensor(self.t),
            "R": tensor(self.R),
            "t": tensor(self.t),
            "focal": float(self.focal),
            "shape": tensor(self.shape),
            "lms2d": tensor(self.lms2d),
            "reproj_err": tensor(self.reproj_err),
            "tracker": self.tracker,
            "tracker_version": self.tracker_version,
        }
        out.update(
            (key, tensor(value))
            for key, value in (
                ("reproj_err_rigid", self.reproj_err_rigid),
                ("expr_basis", self.expr_basis),
                ("expr_coeffs", self.expr_coeffs),
            )
            if value is not None
        )
        return out


class Tracker(Protocol):
    """Anything that turns a clip's 2D landmarks into a TrackResult."""

    name: str
    version: str

    def fit(
        self,
        lms2d: np.ndarray,
        lms_z: np.ndarray | None,
        image_size: int,
        fps: float,
        progress: bool = True,
    ) -> TrackResult:
        """Fit landmarks [T,478,2] (pixels of the square image) with optional MediaPipe depths [T,478]."""
        ...


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, c) minimising |s R src_i + c - dst_i|^2 over point sets [N,3]; R proper rotation."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    s = float((sig * np.diag(d)).sum() / (a**2).sum())
    return s, rot, mu_d - s * rot @ mu_s


def _ellipsoid_depth(xy: np.ndarray) -> np.ndarray:
    """Crude depth [N] of centred 2D face points [N,2] when MediaPipe gives none (nose towards camera)."""
    half = np.abs(xy).max(axis=0) * 1.05
    r2 = ((xy / half) ** 2).sum(axis=1)
    return -0.6 * half[0] * np.sqrt(np.clip(1.0 - r2, 0.0, None))


def _frontal_frame(pts: np.ndarray) -> int:
    """Index of the most frontal frame of landmarks [T,478,2+]: nose tip closest to the cheeks' midpoint."""
    left, right, nose = pts[:, li.RIGHT_CHEEK, 0], pts[:, li.LEFT_CHEEK, 0], pts[:, li.NOSE_TIP, 0]
    asym = np.abs(nose - 0.5 * (left + right)) / np.maximum(np.abs(right - left), 1e-6)
    return int(np.argmin(asym))


def _init_shape_and_poses(pts3d: np.ndarray, iterations: int = 2):
    """Mean head-space shape [478,3] and per-frame similarity (scale [T], R [T,3,3], centre [T,3])."""
    ref = pts3d[_frontal_frame(pts3d)]
    shape = ref - ref.mean(axis=0)
    shape *= HEAD_WIDTH / np.ptp(shape[:, 0])
    for _ in range(iterations):
        sims = [umeyama(shape, p) for p in pts3d]
        back = np.stack([(rot.T @ (p - c).T).T / s for (s, rot, c), p in zip(sims, pts3d, strict=True)])
        shape = back.mean(axis=0)
        shape -= shape.mean(axis=0)
        shape *= HEAD_WIDTH / np.ptp(shape[:, 0])
    sims = [umeyama(shape, p) for p in pts3d]
    scales = np.array([s for s, _, _ in sims])
    rots = np.stack([rot for _, rot, _ in sims])
    centres = np.stack([c for _, _, c in sims])
    return shape, scales, rots, centres


class Adam:
    """Minimal Adam over a dict of tensors (torch.optim would pull in torch._dynamo: seconds of import)."""

    def __init__(self, params: dict[str, torch.Tensor], lrs: dict[str, float], betas=(0.9, 0.999)) -> None:
        """Keep references to `params` (updated in place) and their learning rates."""
        self.params, self.lrs, self.betas, self.t = params, lrs, betas, 0
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}

    @torch.no_grad()
    def step(self, grads: tuple[torch.Tensor, ...], lr_scale: float = 1.0) -> None:
        """Apply one bias-corrected Adam update with gradients in `params` order."""
        self.t += 1
        b1, b2 = self.betas
        for (k, p), g in zip(self.params.items(), grads, strict=True):
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            p.sub_(lr_scale * self.lrs[k] * m_hat / (v_hat.sqrt() + 1e-12))


class LandmarkFitTracker:
    """Batch fit over all frames at once: shared neutral shape + focal, per-frame rotation and translation,
    and a low-rank expression model (K shared basis shapes, per-frame coefficients) for lips, jaw and lids.

    Translation is parametrised as the image position of the head origin and its depth over focal, so that
    the focal length only controls perspective strength and stays well conditioned. Head pose is kept out of
    the expressions: the bases are orthogonal to pose-like deformations (`_pose_like_motions`) at unit RMS
    norm, and the part of the coefficients linearly predicted by the head rotation is penalised
    (`w_expr_pose`), so pose-correlated landmark motion is left to the rigid model. Coefficients are
    zero-mean over the clip: the neutral shape is the clip's mean shape.
    """

    name = "mediapipe"
    version = "1.1"

    def __init__(self, cfg: LandmarkFitConfig | None = None, **changes: Any) -> None:
        """Take the settings `cfg` (None = the defaults) with the fields `changes` replaced (steps=150)."""
        self.cfg = replace(cfg or LandmarkFitConfig(), **changes)

    def fit(
        self,
        lms2d: np.ndarray,
        lms_z: np.ndarray | None,
        image_size: int,
        fps: float,
        progress: bool = True,
    ) -> TrackResult:
        """Fit landmarks [T,478,2] (+ MediaPipe depths [T,478] or None) of a square clip; NaN = missing."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: extra threads only add contention
        try:
            return self._fit(lms2d, lms_z, image_size, fps, progress)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, lms2d: np.ndarray, lms_z: np.ndarray | None, image_size: int, fps: float, progress: bool):
        """Single-threaded body of `fit`."""
        obs = np.asarray(lms2d, dtype=np.float64)
        T = obs.shape[0]
        valid = ~np.isnan(obs).any(axis=(1, 2))
        if not valid.any():
            raise UserError("no face landmarks to track; use a clip where the face is visible")
        half = image_size / 2.0
        if lms_z is None:
            centred = obs[valid] - obs[valid].mean(axis=1, keepdims=True)
            depth = np.stack([_ellipsoid_depth(c) for c in centred])
        else:
            depth = np.asarray(lms_z, dtype=np.float64)[valid]
        pts_valid = np.concatenate([obs[valid], depth[..., None]], axis=-1)
        shape0, scales, rots, centres = _init_shape_and_poses(pts_valid)
        full = lambda a: fill_gaps(scatter(a, valid, T), max_gap=T)[0]
        px_per_unit = float(np.median(scales))
        cfg = self.cfg
        basis0, coeffs0 = _init_expressions(pts_valid, shape0, scales, rots, centres, cfg.num_expr)
        rots = Rotation.from_matrix(full(rots)).as_rotvec()
        uv0, inv_scale = full(centres[:, :2]) - half, full(1.0 / scales[:, None])[:, 0]

        dt = torch.float32
        params = {
            "aa": torch.tensor(rots, dtype=dt),
            "uv": torch.tensor(uv0, dtype=dt),
            "log_d": torch.tensor(np.log(inv_scale), dtype=dt),
            "d_shape": torch.zeros(shape0.shape, dtype=dt),
            "log_f": torch.tensor(np.log(cfg.focal_init * image_size), dtype=dt),
            "basis": torch.tensor(basis0, dtype=dt),
            "coeffs": torch.tensor(full(coeffs0 * px_per_unit), dtype=dt),
        }
        for p in params.values():
            p.requires_grad_(True)
        model = _ShapeModel(torch.tensor(shape0, dtype=dt), torch.tensor(valid, dtype=dt), px_per_unit)
        target = torch.tensor(np.nan_to_num(obs), dtype=dt)
        accel_scale = (fps / 25.0) ** 2  # second differences per frame -> per (1/25 s)^2
        log_f0 = float(params["log_f"].detach())

        def loss_fn() -> torch.Tensor:
            resid = _project(params, model.shapes(params), half) - target
            dist2 = (resid**2).sum(-1)
            robust = pseudo_huber(dist2, cfg.huber_px)
            data = (robust.mean(-1) * model.weight).sum() / model.weight.sum()
            shape_reg = ((params["d_shape"] * px_per_unit) ** 2).sum(-1).mean()
            coeffs = model.coeffs(params)
            expr_reg = (coeffs**2).sum(-1).mean()
            expr_pose = (model.pose_correlated(coeffs, params["aa"].detach()) ** 2).sum(-1).mean()
            smooth = torch.zeros((), dtype=dt)
            expr_smooth = torch.zeros((), dtype=dt)
            if T >= 3:
                smooth = (
                    ((accel(params["aa"]) * px_per_unit) ** 2).sum(-1).mean()
                    + (accel(params["uv"]) ** 2).sum(-1).mean()
                    + ((accel(params["log_d"]) * px_per_unit) ** 2).mean()
                ) * accel_scale**2
                expr_smooth = (accel(coeffs) ** 2).sum(-1).mean() * accel_scale**2
            focal_reg = (params["log_f"] - log_f0) ** 2
            return (
                data
                + cfg.w_shape * shape_reg
                + cfg.w_smooth * smooth
                + cfg.w_focal * focal_reg
                + cfg.w_expr * expr_reg
                + cfg.w_expr_smooth * expr_smooth
                + cfg.w_expr_pose * expr_pose
            )

        lrs = {"aa": cfg.lr_rotation, "uv": cfg.lr_position, "log_d": cfg.lr_depth, "d_shape": cfg.lr_shape}
        lrs |= {"log_f": cfg.lr_focal, "basis": cfg.lr_basis, "coeffs": cfg.lr_coeffs}
        adam = Adam(params, lrs)
        bar = tqdm(
            range(cfg.steps),
            desc="tracking",
            unit="step",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for step in bar:
            loss = loss_fn()
            grads = torch.autograd.grad(loss, list(params.values()))
            adam.step(grads, lr_scale=0.5 * (1 + np.cos(np.pi * step / cfg.steps)) + 0.01)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        return self._result(params, model, half, obs, valid)

    def _result(
        self, params, model: _ShapeModel, half: float, obs: np.ndarray, valid: np.ndarray
    ) -> TrackResult:
        """TrackResult from the optimised parameters, shape re-centred at the origin in upright head axes."""
        with torch.no_grad():
            pred = _project(params, model.shapes(params), half).numpy()
            neutral = model.neutral(params)
            pred_rigid = _project(params, neutral, half).numpy()
            rot, trans, focal = pose(params)
            basis = (model.basis(params) / model.px_per_unit).numpy()
            coeffs = model.coeffs(params).numpy()
        shape, rot, trans = neutral.numpy(), rot.numpy(), trans.numpy()
        centre = shape.mean(axis=0)
        trans = trans + rot @ centre
        axes = _upright_axes(shape - centre)
        shape = (shape - centre) @ axes
        rot = rot @ axes
        err, err_rigid = (np.linalg.norm(p - obs, axis=-1).mean(axis=1) for p in (pred, pred_rigid))
        err[~valid] = np.nan
        err_rigid[~valid] = np.nan
        euler = Rotation.from_matrix(rot).as_euler("xyz")
        return TrackResult(
            R=rot,
            t=trans,
            euler=euler,
            focal=float(focal),
            shape=shape,
            lms2d=obs,
            reproj_err=err,
            tracker=self.name,
            tracker_version=self.version,
            reproj_err_rigid=err_rigid,
            expr_basis=basis @ axes,
            expr_coeffs=coeffs,
        )


class _ShapeModel:
    """Per-frame landmark shapes of the fit: neutral shape + zero-mean low-rank expression deformation."""

    def __init__(self, shape0: torch.Tensor, weight: torch.Tensor, px_per_unit: float) -> None:
        """Keep the initial shape [478,3], per-frame data weights [T] and image scale (px per head unit)."""
        self.shape0, self.weight, self.px_per_unit = shape0, weight, px_per_unit
        self.pose_like = _pose_like_motions(shape0)

    def neutral(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Neutral subject shape [478,3]."""
        return self.shape0 + params["d_shape"]

    def basis(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expression bases [K,478,3] of unit RMS norm, orthogonal to pose-like motions."""
        flat = params["basis"].flatten(1)
        flat = flat - (flat @ self.pose_like) @ self.pose_like.T
        rms = torch.sqrt((flat**2).mean(-1, keepdim=True) * 3 + 1e-12)
        return (flat / rms).reshape(params["basis"].shape)

    def coeffs(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expression coefficients [T,K] (px of RMS landmark motion), zero mean over valid frames."""
        mean = (params["coeffs"] * self.weight[:, None]).sum(0) / self.weight.sum()
        return params["coeffs"] - mean

    def pose_correlated(self, coeffs: torch.Tensor, aa: torch.Tensor) -> torch.Tensor:
        """Part [T,K] of coefficients [T,K] linearly predicted by head rotations [T,3] over valid frames."""
        rot = (aa - (aa * self.weight[:, None]).sum(0) / self.weight.sum()) * self.weight[:, None]
        q, _ = torch.linalg.qr(rot)
        return q @ (q.T @ (coeffs * self.weight[:, None]))

    def shapes(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-frame shapes [T,478,3] in head space (coefficients in px / px_per_unit = head units)."""
        expr = torch.einsum("tk,knc->tnc", self.coeffs(params), self.basis(params)) / self.px_per_unit
        return self.neutral(params) + expr


def _pose_like_motions(shape: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [N*3,10] of deformations of a shape [N,3] that look like a change of head pose.

    Seen from near the front: x/y motion from translation, scaling and rotation (x/y shifts in proportion to
    depth included, whatever the depths do), and depth motion that is an affine function of the position
    (rotations, depth translation and scaling, seen only through perspective).
    """
    x, y, z = (shape - shape.mean(0)).unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    gens = (
        (one, zero, zero),
        (zero, one, zero),
        (x, y, zero),
        (-y, x, zero),
        (zero, -z, zero),
        (z, zero, zero),
        (zero, zero, one),
        (zero, zero, x),
        (zero, zero, y),
        (zero, zero, z),
    )
    q, _ = torch.linalg.qr(torch.stack([torch.stack(g, -1).reshape(-1) for g in gens], dim=1))
    return q


def _init_expressions(
    pts3d: np.ndarray, shape: np.ndarray, scales: np.ndarray, rots: np.ndarray, centres: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Initial expression bases [K,478,3] (unit RMS norm) and coefficients [V,K] (head units) from a PCA of
    the valid frames' 3D landmarks [V,478,3] brought back into head space by their similarities."""
    back = np.einsum("vji,vnj->vni", rots, pts3d - centres[:, None]) / scales[:, None, None] - shape
    flat = back.reshape(len(back), -1)
    flat = flat - flat.mean(axis=0)
    sub = flat[np.linspace(0, len(flat) - 1, min(len(flat), 256)).round().astype(int)]
    _, _, vt = np.linalg.svd(sub, full_matrices=False)
    vt = vt[:k]
    if len(vt) < k:
        vt = np.concatenate([vt, np.random.default_rng(0).normal(size=(k - len(vt), flat.shape[1]))])
        vt /= np.linalg.norm(vt, axis=1, keepdims=True)
    rms = np.sqrt(shape.shape[0])
    return (vt * rms).reshape(k, *shape.shape), flat @ vt.T / rms


def accel(x: torch.Tensor) -> torch.Tensor:
    """Second differences along the first (time) axis: [T,...] -> [T-2,...]."""
    return x[2:] - 2 * x[1:-1] + x[:-2]


def pseudo_huber(dist2: torch.Tensor, scale: float) -> torch.Tensor:
    """Robust penalty of squared pixel distances dist2 [...]: quadratic below `scale` px, linear above."""
    return scale**2 * (torch.sqrt(1 + dist2 / scale**2) - 1)


def _upright_axes(shape: np.ndarray) -> np.ndarray:
    """Upright head axes [3,3] (columns) of a shape [478,3]; `shape @ axes` expresses the shape in them.

    x points from the right to the left eye, y from the forehead towards the chin, z = x cross y (inwards).
    """
    x = shape[li.LEFT_EYE].mean(axis=0) - shape[li.RIGHT_EYE].mean(axis=0)
    x /= np.linalg.norm(x)
    y = shape[li.CHIN] - shape[li.FOREHEAD_TOP]
    y -= x * (y @ x)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def scatter(values: np.ndarray, valid: np.ndarray, T: int) -> np.ndarray:
    """Place per-valid-frame values [V,...] into a NaN-filled [T,...] array."""
    out = np.full((T,) + values.shape[1:], np.nan)
    out[valid] = values
    return out


def pose(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation [T,3,3], translation [T,3] and focal from the fit parameters (see LandmarkFitTracker)."""
    focal = torch.exp(params["log_f"])
    depth = focal * torch.exp(params["log_d"])
    trans = torch.cat([params["uv"] * (depth / focal)[:, None], depth[:, None]], dim=-1)
    return so3_exp(params["aa"]), trans, focal


def _project(params: dict[str, torch.Tensor], shapes: torch.Tensor, half: float) -> torch.Tensor:
    """Pixel projections [T,478,2] of head-space shapes ([478,3] or per frame [T,478,3]) under the poses."""
    rot, trans, focal = pose(params)
    cam = torch.einsum("tij,tnj->tni", rot, shapes.expand(rot.shape[0], -1, -1)) + trans[:, None, :]
    return focal * cam[..., :2] / cam[..., 2:3] + half
