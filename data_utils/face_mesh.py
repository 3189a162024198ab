"""MediaPipe face mesh (478 landmarks with iris) on single images and on video frame sequences."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from contextlib import ExitStack

import numpy as np
from tqdm import tqdm

from data_utils.landmark_indices import NUM_LANDMARKS

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MAX_FACES = 2


def _face_area(face: np.ndarray) -> float:
    """Bounding-box area of one face's landmarks [478,3] in pixels."""
    span = face[:, :2].max(axis=0) - face[:, :2].min(axis=0)
    return float(span[0] * span[1])


class FaceMesh:
    """Context manager around mediapipe's face mesh (refine_landmarks=True, up to two faces)."""

    def __init__(self, static_image_mode: bool = False, min_detection_confidence: float = 0.5) -> None:
        """Create the graph; static_image_mode=False tracks faces across consecutive frames."""
        from mediapipe.python.solutions import face_mesh as mp_face_mesh

        self._mesh = mp_face_mesh.FaceMesh(
            static_image_mode=static_image_mode,
            max_num_faces=MAX_FACES,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=0.5,
        )

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._mesh.close()

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Detect faces in an RGB uint8 image [H,W,3]; each face [478,3] (x,y pixels, z pixel-scaled by W)."""
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or []:
            xyz = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            faces.append(xyz * np.array([w, h, w]))
        return faces


def detect_landmarks(rgb: np.ndarray) -> np.ndarray | None:
    """One-shot static detection of the largest face in an RGB image; [478,3] pixels or None."""
    with FaceMesh(static_image_mode=True) as mesh:
        faces = mesh.detect(rgb)
    return max(faces, key=_face_area) if faces else None


def _pick_face(faces: list[np.ndarray], previous: np.ndarray | None) -> np.ndarray:
    """Choose the face nearest the previous frame's face (or the largest one when there is none)."""
    if previous is None or len(faces) == 1:
        return max(faces, key=_face_area)
    prev_centre = previous[:, :2].mean(axis=0)
    return min(faces, key=lambda f: float(np.linalg.norm(f[:, :2].mean(axis=0) - prev_centre)))


def detect_sequence(frames: Iterable[np.ndarray], progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Track the face mesh over video frames; return landmarks [T,478,3] (NaN = no face) and face counts [T].

    Runs MediaPipe in tracking mode and retries a frame in static-image mode when tracking finds no face.
    With two faces, the one nearest the previous frame's face is kept.
    """
    lms: list[np.ndarray] = []
    counts: list[int] = []
    previous = None
    fallback: FaceMesh | None = None
    with FaceMesh(static_image_mode=False) as tracker, ExitStack() as stack:
        bar = tqdm(
            frames, desc="landmarks", unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True
        )
        for rgb in bar:
            faces = tracker.detect(rgb)
            if not faces:
                fallback = fallback or stack.enter_context(FaceMesh(static_image_mode=True))
                faces = fallback.detect(rgb)
            counts.append(min(len(faces), MAX_FACES))
            if faces:
                previous = _pick_face(faces, previous)
                lms.append(previous)
            else:
                lms.append(np.full((NUM_LANDMARKS, 3), np.nan))
    if not lms:
        return np.zeros((0, NUM_LANDMARKS, 3)), np.zeros(0, dtype=np.int64)
    return np.stack(lms), np.asarray(counts, dtype=np.int64)
