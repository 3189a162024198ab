"""The head trackers' settings (data_utils.tracking, data_utils.bfm.tracker): sections of the preprocess
config tree, one flag each (--track_* for the default tracker, --bfm_* for the BFM one)."""

from __future__ import annotations

from dataclasses import dataclass

from utils.config_cli import option


@dataclass(frozen=True)
class FitConfig:
    """What both trackers share: the camera, the robust data term, pose smoothness and pose learning rates."""

    focal_init: float = option(1.2, "initial focal length, x image size")
    huber_px: float = option(2.0, "robust data term: quadratic below this many pixels of error, linear above")
    w_smooth: float = option(0.01, "weight of the head-pose acceleration penalty")
    w_focal: float = option(1.0, "weight of the pull of the log focal length towards its initial value")
    lr_rotation: float = option(0.01, "Adam lr of the head rotations")
    lr_position: float = option(0.5, "Adam lr of the head image positions (pixels)")
    lr_depth: float = option(0.005, "Adam lr of the log head depths")
    lr_focal: float = option(0.02, "Adam lr of the log focal length")


@dataclass(frozen=True)
class LandmarkFitConfig(FitConfig):
    """The default (mediapipe) tracker: neutral shape, poses and a low-rank expression model; weights in
    squared-pixel units, expression coefficients in pixels of RMS landmark motion."""

    steps: int = option(300, "optimisation steps")
    num_expr: int = option(12, "expression basis shapes (0 = rigid)")
    w_shape: float = option(0.003, "weight of the neutral shape's departure from its initial estimate")
    w_expr: float = option(0.01, "weight of the expression coefficients' size")
    w_expr_smooth: float = option(0.01, "weight of the expression coefficients' acceleration")
    w_expr_pose: float = option(1.0, "weight of the expression motion that the head rotation predicts")
    lr_shape: float = option(0.003, "Adam lr of the neutral shape")
    lr_basis: float = option(0.01, "Adam lr of the expression basis shapes")
    lr_coeffs: float = option(0.1, "Adam lr of the expression coefficients")


@dataclass(frozen=True)
class BFMFitConfig(FitConfig):
    """The bfm tracker: shared identity and focal, per-frame expression and pose of the Basel Face Model."""

    steps: int = option(800, "optimisation steps")
    rigid_share: float = option(0.25, "share of the steps fitting only pose and focal, before all parameters")
    w_id: float = option(0.01, "weight of the identity coefficients' size")
    w_exp: float = option(0.01, "weight of the expression coefficients' size")
    w_exp_smooth: float = option(0.01, "weight of the expression coefficients' acceleration")
    lr_id: float = option(0.1, "Adam lr of the identity coefficients")
    lr_exp: float = option(0.1, "Adam lr of the expression coefficients")
