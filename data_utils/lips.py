"""Lip shape of MediaPipe face-mesh landmarks: the measures the avatar's audio path predicts and the lip-sync
score reads."""

import numpy as np

from data_utils import landmark_indices as li

LIP_MEASURES = ("outer_opening", "inner_opening", "width")


def lip_measures(lms: np.ndarray) -> np.ndarray:
    """Outer-lip opening, inner-lip gap and mouth-corner width of landmarks [T,478,2+] over the outer
    eye-corner distance -> [T,3] (scale free); NaN where a frame has no face."""
    lms = np.asarray(lms, np.float64)[..., :2]
    pairs = (
        (li.UPPER_LIP_OUTER_MID, li.LOWER_LIP_OUTER_MID),
        (li.UPPER_LIP_INNER_MID, li.LOWER_LIP_INNER_MID),
        tuple(li.MOUTH_CORNERS),
    )
    lengths = np.stack([np.linalg.norm(lms[:, a] - lms[:, b], axis=-1) for a, b in pairs], axis=-1)
    scale = np.linalg.norm(lms[:, li.RIGHT_EYE_CORNERS[0]] - lms[:, li.LEFT_EYE_CORNERS[0]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale[:, None] > 0, lengths / scale[:, None], np.nan)
