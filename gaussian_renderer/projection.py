"""EWA projection of 3D Gaussians to the image plane, with the maths of gsplat 1.5.3 (pinhole camera).

Shared by the PyTorch rasterizer and the tests; the gsplat backend runs the same maths in CUDA.
Conventions: quaternions (w, x, y, z), not necessarily normalised; viewmats world->camera (OpenCV: x right,
y down, z forward); pixel (i, j) has its centre at (j + 0.5, i + 0.5).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat: splats with alpha below this are skipped
MAX_ALPHA = 0.999  # gsplat 1.5.3 clamps each splat's alpha to this
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before the splat that would bring T to or below this
EXTEND_MAX = 3.33  # box half-width in standard deviations (gsplat 1.5.3)
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EPS2D = 0.3  # low-pass filter added to the 2D covariance, in pixels^2


@dataclass
class Projection:
    """Projected Gaussians for B cameras; entries with radii == 0 are culled and must be ignored."""

    means2d: Tensor  # [B,N,2] pixel coordinates of the centres
    conics: Tensor  # [B,N,3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor  # [B,N] camera-space z
    extents: Tensor  # [B,N,2] float half-widths (px) of the box outside which alpha < ALPHA_THRESHOLD
    radii: Tensor  # [B,N,2] int32 gsplat radii (ceil of extents), 0 = culled


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [...,3,3] from quaternions [...,4] (w, x, y, z), normalised here."""
    w, x, y, z = torch.unbind(torch.nn.functional.normalize(quats, dim=-1), dim=-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return rot.reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances [...,3,3] = R S S^T R^T from quaternions [...,4] and linear scales [...,3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> Projection:
    """Project Gaussians ([B,N,...] per camera or [N,...] shared) with viewmats [B,4,4], Ks [B,3,3]."""
    rot_w2c = viewmats[:, None, :3, :3]  # [B,1,3,3]
    means_c = (rot_w2c @ means[..., None]).squeeze(-1) + viewmats[:, None, :3, 3]  # [B,N,3]
    covars_c = rot_w2c @ covariance_3d(quats, scales) @ rot_w2c.transpose(-1, -2)  # [B,N,3,3]
    x, y, z = torch.unbind(means_c, dim=-1)
    in_depth = (z > near_plane) & (z < far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite (and their grads zero)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [B,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.clamp(x / z, min=-lim_x_neg, max=lim_x_pos)
    ty = z * torch.clamp(y / z, min=-lim_y_neg, max=lim_y_pos)
    zeros = torch.zeros_like(z)
    jac = torch.stack([fx / z, zeros, -fx * tx / z**2, zeros, fy / z, -fy * ty / z**2], dim=-1)
    jac = jac.reshape(z.shape + (2, 3))
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)
    cov_xx = cov2d[..., 0, 0] + eps2d
    cov_yy = cov2d[..., 1, 1] + eps2d
    cov_xy = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = cov_xx * cov_yy - cov_xy * cov_xy
    det_ok = det > 0
    det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.expand(z.shape)
        ratio = torch.clamp(opac / ALPHA_THRESHOLD, min=1.0)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(ratio)), max=EXTEND_MAX)
        extents = extend[..., None] * torch.stack([cov_xx, cov_yy], dim=-1).clamp(min=0).sqrt()
        radii_f = torch.ceil(extents)
        mx, my = means2d[..., 0], means2d[..., 1]
        rx, ry = radii_f[..., 0], radii_f[..., 1]
        inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = in_depth & det_ok & (opac >= ALPHA_THRESHOLD) & inside
        radii = torch.where(valid[..., None], radii_f, torch.zeros_like(radii_f)).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=means_c[..., 2], extents=extents, radii=radii)
