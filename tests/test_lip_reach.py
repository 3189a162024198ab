"""Tests of evaluation.lip_reach: where the predicted lip code changes a render, by distance to the mouth."""

import numpy as np
import pytest

from data_utils import landmark_indices as li
from evaluation.lip_reach import FAR_MOUTH_WIDTHS, lip_reach

T, H, W = 3, 64, 96
CENTRE, WIDTH = np.array([48.0, 40.0]), 10.0  # the mouth: centre (x, y) and corner distance, pixels


def landmarks(frames: int = T) -> np.ndarray:
    """[frames,478,2] landmarks whose outer lips are centred on CENTRE and whose corners are WIDTH apart."""
    lms = np.full((frames, 478, 2), np.nan)
    lms[:, li.LIPS_OUTER] = CENTRE
    lms[:, li.MOUTH_CORNERS[0]] = CENTRE - [WIDTH / 2, 0]
    lms[:, li.MOUTH_CORNERS[1]] = CENTRE + [WIDTH / 2, 0]
    return lms


def renders(box: tuple[slice, slice], step: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two random [T,H,W,3] uint8 renders that differ by `step` inside `box` (rows, columns) alone."""
    tracked = np.random.default_rng(0).integers(0, 200, (T, H, W, 3), dtype=np.uint8)
    predicted = tracked.copy()
    predicted[:, box[0], box[1]] += step
    return predicted, tracked


def test_a_change_at_the_mouth_alone_reaches_nothing_far_away() -> None:
    predicted, tracked = renders((slice(36, 44), slice(44, 52)))
    reach = lip_reach(predicted, tracked, landmarks())
    assert reach["far_share"] == 0.0 and reach["far_mean"] == 0.0
    assert reach["near_mean"] > 5 and reach["mouth_width_px"] == pytest.approx(WIDTH)


def test_a_change_of_the_hair_is_all_far_and_the_share_splits_by_area() -> None:
    hair = (slice(0, 5), slice(0, W))  # the top rows: more than 3 mouth widths above the mouth
    assert (CENTRE[1] - 5) / WIDTH > FAR_MOUTH_WIDTHS
    reach = lip_reach(*renders(hair), landmarks())
    assert reach["far_share"] == 1.0 and reach["near_mean"] == 0.0
    both_p, both_t = renders(hair)
    both_p[:, 36:44, 44:52] = both_t[:, 36:44, 44:52] + 40  # as much change per pixel at the mouth
    reach = lip_reach(both_p, both_t, landmarks())
    assert reach["far_share"] == pytest.approx(5 * W / (5 * W + 64), abs=1e-3)


def test_identical_renders_and_faceless_frames() -> None:
    _, tracked = renders((slice(0, 1), slice(0, 1)))
    assert lip_reach(tracked, tracked, landmarks())["far_share"] == 0.0
    faceless = landmarks()
    faceless[:] = np.nan
    assert lip_reach(*renders((slice(0, 5), slice(0, W))), faceless)["far_share"] is None
    one_face = faceless.copy()
    one_face[1] = landmarks(1)[0]  # frames without a face are left out
    assert lip_reach(*renders((slice(0, 5), slice(0, W))), one_face)["far_share"] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        lip_reach(tracked[:2], tracked, landmarks())
    with pytest.raises(ValueError, match="landmark frames"):
        lip_reach(tracked, tracked, landmarks(2))
