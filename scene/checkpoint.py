"""Checkpoints: `chkpnt<N>.pth` (everything to rebuild and resume), `cfg_args` (JSON config) and the canonical
Gaussians as a standard 3DGS PLY; loading rebuilds the avatar only from what was saved."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scene.avatar import Avatar
from scene.deformation import DeformConfig
from scene.gaussians import GaussianParams
from scene.pose_correction import corrections_from_state
from utils.atomic import atomic_write_bytes, atomic_write_json
from utils.cli import UserError
from utils.ply import save_ply

_CHECKPOINT_RE = re.compile(r"chkpnt(\d+)\.pth$")


@dataclass
class LoadedAvatar:
    """An avatar rebuilt from a checkpoint plus what prediction needs to feed it."""

    avatar: Avatar
    config: dict  # the saved config: "train", "deform", "num_gaussians", "bounds", "audio_*", "dataset"
    iteration: int
    audio_extractor: dict  # {"name", "settings"}
    audio_norm: dict  # {"mean": [C], "std": [C]}
    dataset_meta: dict  # resolution, focal, fps, ...
    pose_corrections: Tensor | None = None  # [T,6] learned corrections of the training cameras (--lr_pose)


def checkpoint_path(model_path: Path, iteration: int) -> Path:
    """model_path/chkpnt<iteration>.pth."""
    return Path(model_path) / f"chkpnt{iteration}.pth"


def list_checkpoints(model_path: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every chkpnt<N>.pth in model_path, sorted by iteration."""
    model_path = Path(model_path)
    if not model_path.is_dir():
        return []
    found = ((_CHECKPOINT_RE.match(p.name), p) for p in model_path.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def latest_checkpoint(model_path: Path) -> Path | None:
    """Path of the highest-iteration chkpnt<N>.pth in model_path, or None."""
    found = list_checkpoints(model_path)
    return found[-1][1] if found else None


def save_checkpoint(
    model_path: Path, iteration: int, avatar: Avatar, config: dict, state: dict[str, Any]
) -> Path:
    """Write chkpnt<iteration>.pth ({"iteration", "config", "model", **state}), cfg_args (config as JSON) and
    point_cloud/iteration_<N>/point_cloud.ply atomically; return the checkpoint path. `config` must hold
    "deform" (DeformConfig.to_dict()), "bounds" [2,3] list and JSON-serialisable run settings."""
    model_path = Path(model_path)
    config = {**config, "num_gaussians": avatar.gaussians.num_gaussians}
    payload = {"iteration": iteration, "config": config, "model": avatar.state_dict(), **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = checkpoint_path(model_path, iteration)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_json(model_path / "cfg_args", config)
    p = avatar.gaussians.params
    save_ply(
        model_path / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply",
        p["means"],
        p["log_scales"],
        p["quats"],
        p["opacity_logits"],
        avatar.gaussians.colors,
    )
    return path


def avatar_from_checkpoint(checkpoint: dict, device: torch.device | str = "cpu") -> Avatar:
    """Rebuild the Avatar from a loaded checkpoint dict (sizes from the saved config and tensor shapes)."""
    state = checkpoint["model"]
    gaussians = GaussianParams(state["gaussians.params.means"].shape[0])
    config = checkpoint["config"]
    try:  # the network as built: train.deform plus the dataset's audio shape and tracked mouth region
        deform_cfg = DeformConfig.from_dict(config["deform"])
    except (ValueError, TypeError) as err:
        raise UserError(
            f"the checkpoint's deformation settings do not fit this version ({err}); "
            "retrain with ./train.sh, or use the version that trained it"
        ) from err
    avatar = Avatar(gaussians, deform_cfg, torch.tensor(config["bounds"]))
    avatar.load_state_dict(state)
    return avatar.to(device)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The raw checkpoint dict at path (tensors on device); UserError if unreadable."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a corrupt file raises UnpicklingError, UnicodeDecodeError, EOFError, ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"cannot read checkpoint '{path}' ({reason}); train again or pick another --iteration"
        ) from err
    if not isinstance(checkpoint, dict) or not {"config", "model", "iteration"} <= checkpoint.keys():
        raise UserError(f"'{path}' is not a checkpoint of train.sh; train again or pick another --iteration")
    return checkpoint


def load_avatar(
    model_path: Path, iteration: int | None = None, device: torch.device | str = "cpu"
) -> LoadedAvatar:
    """Load chkpnt<iteration>.pth (default: the latest) from model_path and rebuild the avatar on device."""
    model_path = Path(model_path)
    path = latest_checkpoint(model_path) if iteration is None else checkpoint_path(model_path, iteration)
    if path is None or not path.is_file():
        what = "no checkpoint" if iteration is None else f"no checkpoint for iteration {iteration}"
        raise UserError(f"'{model_path}' has {what}; run ./train.sh first")
    checkpoint = load_checkpoint(path, device)
    config = checkpoint["config"]
    return LoadedAvatar(
        avatar=avatar_from_checkpoint(checkpoint, device),
        config=config,
        iteration=int(checkpoint["iteration"]),
        audio_extractor=config["audio_extractor"],
        audio_norm=config["audio_norm"],
        dataset_meta=config["dataset"],
        pose_corrections=(
            corrections_from_state(checkpoint["pose_correction"])
            if checkpoint.get("pose_correction") is not None
            else None
        ),
    )
