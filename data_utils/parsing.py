"""Parsing masks (head / neck / torso / background) from MediaPipe selfie segmentation and face landmarks."""

from __future__ import annotations

from types import TracebackType

import cv2
import mediapipe as mp
import numpy as np

from data_utils.landmark_indices import FACE_OVAL

HEAD = (255, 0, 0)
NECK = (0, 255, 0)
TORSO = (0, 0, 255)
BACKGROUND = (255, 255, 255)
COLOURS = (HEAD, NECK, TORSO, BACKGROUND)

HAIR_EXPANSION = 0.55  # head zone reach beyond the face oval at eye level, fraction of the oval radius
NECK_HALF_WIDTH = 0.33  # half width of the neck band, fraction of the face width
NECK_DEPTH = 0.45  # how far below the chin the neck reaches, fraction of the face height
PLATE_THRESHOLD = 24.0  # max channel difference (0-255, after PLATE_BLUR) from the plate that marks a person
PLATE_REACH = 0.03  # how far from the segmenter's mask such pixels may lie, fraction of the image side
PLATE_BLUR = (5, 5)


class PersonSegmenter:
    """Context manager around MediaPipe selfie segmentation (general model, weights ship in the wheel)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._seg.close()

    def person_mask(self, rgb: np.ndarray) -> np.ndarray:
        """Take an RGB uint8 image [H,W,3]; return a bool person mask [H,W] (largest blob, holes filled)."""
        prob = self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask
        mask = (prob > self.threshold).astype(np.uint8)
        return _largest_component(mask)


class PlateRefiner:
    """Grows person masks by the nearby pixels that differ from the background plate: hair tips and strands
    that the low-resolution segmenter misses."""

    def __init__(
        self, plate: np.ndarray, threshold: float = PLATE_THRESHOLD, reach: float = PLATE_REACH
    ) -> None:
        """Take the plate [H,W,3] uint8, the colour difference that marks a person pixel (0-255, after a 5x5
        blur) and how far from the segmented person such pixels may lie (fraction of the image side)."""
        self._plate = cv2.GaussianBlur(plate, PLATE_BLUR, 0)
        self._threshold = threshold
        radius = max(1, round(reach * max(plate.shape[:2])))
        self._near_kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)

    def __call__(self, person: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Take the segmenter's bool person mask [H,W] and the RGB frame [H,W,3] uint8; return the grown
        bool mask [H,W]."""
        diff = cv2.absdiff(cv2.GaussianBlur(frame, PLATE_BLUR, 0), self._plate).max(axis=-1)
        differs = cv2.morphologyEx((diff > self._threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3)))
        near = cv2.dilate(person.astype(np.uint8), self._near_kernel)
        return person | ((differs & near) > 0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a uint8 {0,1} mask and fill its holes; return bool [H,W]."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == keep).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(blob, contours, -1, 1, thickness=cv2.FILLED)
    return blob.astype(bool)


def _fill(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """Rasterise a polygon [K,2] (pixels) into a bool mask of `shape`."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def head_zone(oval: np.ndarray) -> np.ndarray:
    """Take the face oval [K,2]; return the polygon [K,2] where hair and ears may lie."""
    centre = oval.mean(axis=0)
    chin_y = oval[:, 1].max()
    weight = np.clip((chin_y - oval[:, 1]) / max(chin_y - centre[1], 1.0), 0.0, 1.0)
    return centre + (oval - centre) * (1.0 + HAIR_EXPANSION * weight[:, None])


def label_regions(person: np.ndarray, lms2d: np.ndarray) -> np.ndarray:
    """Take a bool person mask [H,W], landmarks [478,2+]; return labels [H,W] 0 bg/1 head/2 neck/3 torso."""
    h, w = person.shape
    oval = lms2d[FACE_OVAL, :2].astype(np.float64)
    x0, y0 = oval.min(axis=0)
    x1, y1 = oval.max(axis=0)
    face_w, face_h = x1 - x0, y1 - y0
    ys, xs = np.ogrid[0:h, 0:w]
    above_face = (ys < y0) & (xs > x0 - face_w) & (xs < x1 + face_w)
    head = _fill((h, w), oval) | (person & (_fill((h, w), head_zone(oval)) | above_face))
    centre_x = oval[:, 0].mean()
    band = (np.abs(xs - centre_x) < NECK_HALF_WIDTH * face_w) & (ys < y1 + NECK_DEPTH * face_h)
    neck = person & ~head & band
    labels = np.zeros((h, w), np.uint8)
    labels[person] = 3
    labels[neck] = 2
    labels[head] = 1
    return labels


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
    """Take labels [H,W] (0 bg, 1 head, 2 neck, 3 torso); return the RGB colour code image [H,W,3] uint8."""
    palette = np.array([BACKGROUND, HEAD, NECK, TORSO], np.uint8)
    return palette[labels]
