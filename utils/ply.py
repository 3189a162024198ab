"""Standard 3D Gaussian Splatting PLY files (SH degree 0) written with numpy structured arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from utils.atomic import atomic_write_bytes
from utils.cli import UserError

SH_C0 = 0.28209479177387814
_FIELDS = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


def save_ply(
    path: Path, means: Tensor, log_scales: Tensor, quats: Tensor, opacity_logits: Tensor, colors_rgb: Tensor
) -> None:
    """Write Gaussians (means [N,3], log_scales [N,3], quats [N,4] wxyz, opacity_logits [N], RGB [N,3])."""
    n = means.shape[0]
    data = np.zeros(n, dtype=[(name, "<f4") for name in _FIELDS])
    cols = {
        "xyz": means,
        "f_dc": (colors_rgb - 0.5) / SH_C0,
        "opacity": opacity_logits.reshape(n, 1),
        "scale": log_scales,
        "rot": quats,
    }
    arrays = {k: v.detach().float().cpu().numpy() for k, v in cols.items()}
    for i, axis in enumerate("xyz"):
        data[axis] = arrays["xyz"][:, i]
    for i in range(3):
        data[f"f_dc_{i}"] = arrays["f_dc"][:, i]
        data[f"scale_{i}"] = arrays["scale"][:, i]
    for i in range(4):
        data[f"rot_{i}"] = arrays["rot"][:, i]
    data["opacity"] = arrays["opacity"][:, 0]
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in _FIELDS) + "end_header\n"
    atomic_write_bytes(Path(path), header.encode("ascii") + data.tobytes())


def load_ply(path: Path) -> dict[str, Tensor]:
    """Read a PLY written by save_ply -> dict means, log_scales, quats, opacity_logits, colors_rgb."""
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise UserError(f"'{path}' is not a PLY file")
    header = raw[:end].decode("ascii").splitlines()
    names = [line.split()[-1] for line in header if line.startswith("property")]
    n = next(int(line.split()[-1]) for line in header if line.startswith("element vertex"))
    data = np.frombuffer(raw[end + len(b"end_header\n") :], dtype=[(k, "<f4") for k in names], count=n)

    def stack(keys: list[str]) -> Tensor:
        return torch.from_numpy(np.stack([data[k] for k in keys], axis=1).copy())

    return {
        "means": stack(["x", "y", "z"]),
        "log_scales": stack([f"scale_{i}" for i in range(3)]),
        "quats": stack([f"rot_{i}" for i in range(4)]),
        "opacity_logits": stack(["opacity"])[:, 0],
        "colors_rgb": stack([f"f_dc_{i}" for i in range(3)]) * SH_C0 + 0.5,
    }
