"""Torso images: the frame with only torso and neck opaque (RGBA), head and background transparent."""

from __future__ import annotations

import cv2
import numpy as np


def torso_alpha(parsing: np.ndarray, feather_px: int = 1) -> np.ndarray:
    """Take a parsing image [H,W,3] uint8; return alpha [H,W] uint8 (255 torso+neck, feathered; 0 head)."""
    red, green = parsing[..., 0], parsing[..., 1]
    alpha = np.where(red == 0, np.uint8(255), np.uint8(0))  # neck (0,255,0) and torso (0,0,255) have no red
    if feather_px > 0:
        k = 2 * feather_px + 1
        alpha = cv2.GaussianBlur(alpha, (k, k), 0)
        alpha[(red == 255) & (green == 0)] = 0  # head (255,0,0) stays fully transparent
    return alpha


def torso_rgba(rgb: np.ndarray, parsing: np.ndarray, feather_px: int = 1) -> np.ndarray:
    """Take an RGB frame [H,W,3] uint8 and its parsing image; return RGBA [H,W,4] uint8, torso+neck opaque.

    Colour is zeroed where alpha is 0, which keeps the PNGs small and fast to write.
    """
    alpha = torso_alpha(parsing, feather_px)
    out = np.zeros(rgb.shape[:2] + (4,), np.uint8)
    visible = alpha > 0
    out[visible, :3] = rgb[visible]
    out[..., 3] = alpha
    return out
