"""The installed Basel Face Model 2009 (compact form written by `download_bfm.sh`) as a torch morphable model.

Head space of the compact model: decimetres (BFM micrometres x 1e-5, the head is ~1.6 wide), centred on the
mean of the trimmed mesh, axes turned to the OpenCV-like convention of the default tracker (x to the image
right, y down, z away from the viewer: the nose tip has the smallest z).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_utils.bfm import COMPACT_KEYS, COMPACT_NAME, HOW_TO_GET, METADATA_NAME, default_cache_dir
from utils.cli import UserError


@dataclass
class BFMModel:
    """Mean shape [V,3], id basis [80,V,3], expression basis [64,V,3], triangles [F,3], keypoints [68].

    `keypoint_idx` is empty when the install had no landmark indices; the tracker then picks them per clip.
    """

    mean_shape: torch.Tensor
    id_basis: torch.Tensor
    exp_basis: torch.Tensor
    triangles: torch.Tensor
    keypoint_idx: torch.Tensor
    tex_mean: torch.Tensor
    metadata: dict

    @classmethod
    def load(cls, cache_dir: Path | None = None, device: str | torch.device = "cpu") -> BFMModel:
        """Load the compact model from `cache_dir` (default `default_cache_dir()`); UserError if absent."""
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path, meta_path = folder / COMPACT_NAME, folder / METADATA_NAME
        if not path.is_file() or not meta_path.is_file():
            raise UserError(f"{HOW_TO_GET} (looked in '{folder}')")
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in COMPACT_KEYS}
            metadata = json.loads(meta_path.read_text())
        except (OSError, ValueError, KeyError) as err:
            raise UserError(
                f"the installed Basel Face Model in '{folder}' is unreadable ({err}); "
                "reinstall it with ./download_bfm.sh --force --from FOLDER"
            ) from err
        t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)
        return cls(
            mean_shape=t(arrays["mean_shape"]),
            id_basis=t(arrays["id_basis"]),
            exp_basis=t(arrays["exp_basis"]),
            triangles=t(arrays["triangles"], torch.long),
            keypoint_idx=t(arrays["keypoints"], torch.long),
            tex_mean=t(arrays["tex_mean"]),
            metadata=metadata,
        )

    @property
    def num_vertices(self) -> int:
        """Number of vertices V of the trimmed mesh."""
        return int(self.mean_shape.shape[0])

    def vertices(
        self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Vertices [B,V,3] (or [B,len(index),3]) for identity [B,80] and expression [B,64] coefficients."""
        mean, ids, exps = self.mean_shape, self.id_basis, self.exp_basis
        if index is not None:
            mean, ids, exps = mean[index], ids[:, index], exps[:, index]
        return (
            mean
            + torch.einsum("bk,kvc->bvc", id_coeff.to(mean.dtype), ids)
            + torch.einsum("bk,kvc->bvc", exp_coeff.to(mean.dtype), exps)
        )

    def keypoints(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """The 68 iBUG landmark vertices [B,68,3] for identity [B,80] and expression [B,64] coefficients."""
        return self.vertices(id_coeff, exp_coeff, self.keypoint_idx)

    def select(self, index: torch.Tensor) -> BFMModel:
        """The model restricted to vertices `index` [K] (no triangles; keypoints = all K) for fast fits."""
        return BFMModel(
            mean_shape=self.mean_shape[index],
            id_basis=self.id_basis[:, index].contiguous(),
            exp_basis=self.exp_basis[:, index].contiguous(),
            triangles=self.triangles[:0],
            keypoint_idx=torch.arange(len(index), device=index.device),
            tex_mean=self.tex_mean[index],
            metadata=self.metadata,
        )
