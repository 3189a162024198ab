"""Basel Face Model 2009 support: installer (`download_bfm.sh`), torch model and the "bfm" tracker.

This module holds what the installer and the model share without importing torch: the compact format's names
and sizes, the install location and the instructions shown when the model is missing.
"""

from __future__ import annotations

from pathlib import Path

from utils.paths import cache_dir

COMPACT_NAME = "bfm_compact.npz"
METADATA_NAME = "metadata.json"
FORMAT_VERSION = 1
NUM_ID = 80
NUM_EXP = 64
NUM_KEYPOINTS = 68
COMPACT_KEYS = ("mean_shape", "id_basis", "exp_basis", "triangles", "keypoints", "tex_mean")

HOW_TO_GET = (
    "the Basel Face Model is not installed: download the Basel Face Model 2009 (01_MorphableModel.mat) "
    "from the University of Basel (https://faces.dmi.unibas.ch/bfm/main.php?nav=1-1-0&id=details) after "
    "accepting its licence, and get Exp_Pca.bin (Guo et al.'s expression basis, github.com/Juyong/3DFace "
    "'CoarseData') and BFM_exp_idx.mat, plus std_exp.txt and facemodel_info.mat with BFM_front_idx.mat for "
    "the 68 landmarks, as distributed with Deep3DFaceRecon (its BFM/ folder) or ER-NeRF/AD-NeRF "
    "(data_utils/face_tracking/3DMM/); put them in one folder and run ./download_bfm.sh --from FOLDER "
    "(or ./download_bfm.sh --url URL for each file or an archive of them)"
)


def default_cache_dir() -> Path:
    """Install folder of the compact model: $EGSTALKER_CACHE/bfm (default ~/.cache/egstalker/bfm)."""
    return cache_dir("bfm")
