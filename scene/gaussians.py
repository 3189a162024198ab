"""Canonical 3D Gaussians of the head: parameters, activations, dense initialisation on the tracked face."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import Delaunay, cKDTree
from torch import Tensor, nn

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "color_logits")
_NOSE_TIP, _FOREHEAD, _CHIN = 1, 10, 152


class GaussianParams(nn.Module):
    """Per-Gaussian learnable tensors (means [N,3], log_scales [N,3], quats [N,4], opacity_logits [N],
    color_logits [N,3]) in an nn.ParameterDict, with activated views as properties."""

    def __init__(self, num_gaussians: int) -> None:
        """Allocate N Gaussians with placeholder values (filled by init_from_track or load_state_dict)."""
        super().__init__()
        n = num_gaussians
        self.params = nn.ParameterDict(
            {
                "means": nn.Parameter(torch.zeros(n, 3)),
                "log_scales": nn.Parameter(torch.full((n, 3), -4.0)),
                "quats": nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1)),
                "opacity_logits": nn.Parameter(torch.zeros(n)),
                "color_logits": nn.Parameter(torch.zeros(n, 3)),
            }
        )

    @property
    def num_gaussians(self) -> int:
        """Number of Gaussians N."""
        return self.params["means"].shape[0]

    @property
    def means(self) -> Tensor:
        """Centres [N,3]."""
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        """Linear scales exp(log_scales) [N,3]."""
        return torch.exp(self.params["log_scales"])

    @property
    def opacities(self) -> Tensor:
        """Opacities sigmoid(opacity_logits) [N]."""
        return torch.sigmoid(self.params["opacity_logits"])

    @property
    def colors(self) -> Tensor:
        """RGB colours sigmoid(color_logits) [N,3]."""
        return torch.sigmoid(self.params["color_logits"])

    def bounds(self) -> Tensor:
        """Axis-aligned bounds of the centres [2,3] (min row, max row)."""
        m = self.params["means"].detach()
        return torch.stack([m.min(0).values, m.max(0).values])

    @torch.no_grad()
    def set_from_points(self, points: Tensor, colors: Tensor, init_opacity: float) -> None:
        """Replace all Gaussians by isotropic ones at points [N,3], colours [N,3]; scale = 3-NN distance."""
        pts = points.detach().cpu().double().numpy()
        dist, _ = cKDTree(pts).query(pts, k=4)
        nn_dist = np.clip(dist[:, 1:].mean(axis=1), 1e-4, None)
        log_scale = torch.from_numpy(np.log(nn_dist)).float()[:, None].repeat(1, 3)
        n = points.shape[0]
        values = {
            "means": points.float(),
            "log_scales": log_scale,
            "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            "opacity_logits": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            "color_logits": torch.zeros(n, 3),
        }
        device = self.params["means"].device
        for name in PARAM_NAMES:
            self.params[name] = nn.Parameter(values[name].to(device))
        self.set_colors(colors)

    @torch.no_grad()
    def set_colors(self, rgb: Tensor) -> None:
        """Set the colours to rgb [N,3] in [0,1] (clamped to [0.02, 0.98] before the logit)."""
        rgb = rgb.float().clamp(0.02, 0.98).to(self.params["color_logits"].device)
        self.params["color_logits"].copy_(torch.log(rgb / (1 - rgb)))

    @torch.no_grad()
    def colors_from_image(self, image: Tensor, viewmat: Tensor, K: Tensor, mask: Tensor) -> Tensor:
        """Colours [N,3] of image [H,W,3] at the projected centres (viewmat [4,4], K [3,3]) where mask [H,W]
        is set; grey elsewhere."""
        h, w = image.shape[:2]
        cam = self.means @ viewmat[:3, :3].T + viewmat[:3, 3]
        uv = cam @ K.T
        px = (uv[:, :2] / uv[:, 2:3].clamp_min(1e-6)).floor().long()
        ok = (cam[:, 2] > 0) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        ok[ok.clone()] = mask[px[ok, 1], px[ok, 0]].bool()
        out = torch.full_like(self.means, 0.5)
        out[ok] = image[px[ok, 1], px[ok, 0]].float()
        return out


def _head_frame(shape: np.ndarray, cam_centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head axes (right, up, forward = to the camera) from landmarks [478,3] and camera centre [3]."""
    forward = cam_centre - shape.mean(axis=0)
    if np.linalg.norm(forward) < 1e-8:
        forward = shape[_NOSE_TIP] - shape.mean(axis=0)
    forward /= np.linalg.norm(forward)
    up = shape[_FOREHEAD] - shape[_CHIN]
    up -= forward * (up @ forward)
    up /= np.linalg.norm(up)
    return np.cross(up, forward), up, forward


def sample_face_surface(
    shape: np.ndarray, forward: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Area-weighted uniform samples [n,3] on a Delaunay triangulation of the landmarks' front view."""
    basis = np.linalg.svd(np.eye(3) - np.outer(forward, forward))[0][:, :2]
    tri = shape[Delaunay(shape @ basis).simplices]  # [F,3,3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(tri), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def sample_head_shell(
    shape: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Samples [n,3] on the back, sides and top of an ellipsoid around the landmarks (skull, hair, ears),
    sized so that its silhouette seen from the camera reaches beyond the face oval."""
    right, up, forward = axes
    rel = shape - shape.mean(axis=0)
    width, height = np.ptp(rel @ right), np.ptp(rel @ up)
    radii = np.array([0.7 * width, 0.75 * height, 0.6 * width])
    front = (rel @ forward).max()
    centre = shape.mean(axis=0) + up * 0.2 * height + forward * (front - 0.55 * width)
    d = rng.normal(size=(4 * n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    keep = (d[:, 2] < 0.35) | (d[:, 1] > 0.55)  # drop the part in front of the face, keep the top
    local = d[keep][:n] * radii
    return centre + local[:, :1] * right + local[:, 1:2] * up + local[:, 2:3] * forward


def init_from_track(
    track_params: dict, n_points: int, seed: int, shell_fraction: float = 0.3, init_opacity: float = 0.1
) -> GaussianParams:
    """Dense Gaussians on the tracked face plus a head shell from track_params (`shape` [478,3], R, t)."""
    shape = np.asarray(torch.as_tensor(track_params["shape"]).double())
    rot = np.asarray(torch.as_tensor(track_params["R"]).double())
    trans = np.asarray(torch.as_tensor(track_params["t"]).double())
    cam_centre = (-np.einsum("tji,tj->ti", rot, trans)).mean(axis=0)
    axes = _head_frame(shape, cam_centre)
    rng = np.random.default_rng(seed)
    n_shell = int(n_points * shell_fraction)
    points = np.concatenate(
        [
            sample_face_surface(shape, axes[2], n_points - n_shell, rng),
            sample_head_shell(shape, axes, n_shell, rng),
        ]
    )
    gaussians = GaussianParams(0)
    pts = torch.from_numpy(points).float()
    gaussians.set_from_points(pts, torch.full_like(pts, 0.5), init_opacity)
    return gaussians
