"""Named index arrays into MediaPipe's 478-point face mesh (468 mesh points + 10 iris points).

"Right"/"left" are the subject's own sides (MediaPipe's naming): the subject's right eye is on the image left.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 478

FACE_OVAL = np.array(
    [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
     152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
)  # fmt: skip
JAW_LINE = FACE_OVAL[11:26]  # from the right jaw angle (288) over the chin (152) to the left one (58)
LIPS_OUTER = np.array(
    [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
)
LIPS_INNER = np.array(
    [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
)
UPPER_LIP_INNER_MID = 13
LOWER_LIP_INNER_MID = 14
UPPER_LIP_OUTER_MID = 0
LOWER_LIP_OUTER_MID = 17
MOUTH_CORNERS = np.array([61, 291])
# the inner lips' upper and lower edges, each from the right corner (78) to the left (308)
UPPER_LIP_INNER_CURVE = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308])
LOWER_LIP_INNER_CURVE = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308])

RIGHT_EYE = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246])
LEFT_EYE = np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466])
RIGHT_EYE_CORNERS = np.array([33, 133])
LEFT_EYE_CORNERS = np.array([263, 362])
RIGHT_EYELID_PAIRS = np.array([[160, 144], [159, 145], [158, 153]])  # (upper, lower)
LEFT_EYELID_PAIRS = np.array([[385, 380], [386, 374], [387, 373]])  # (upper, lower)
# the upper and lower eyelid edges, corner to corner, of the right eye then the left
UPPER_EYELID_CURVES = (
    np.array([33, 246, 161, 160, 159, 158, 157, 173, 133]),
    np.array([362, 398, 384, 385, 386, 387, 388, 466, 263]),
)
LOWER_EYELID_CURVES = (
    np.array([33, 7, 163, 144, 145, 153, 154, 155, 133]),
    np.array([362, 382, 381, 380, 374, 373, 390, 249, 263]),
)
RIGHT_IRIS_CENTER = 468
LEFT_IRIS_CENTER = 473
RIGHT_IRIS = np.arange(468, 473)
LEFT_IRIS = np.arange(473, 478)

NOSE_TIP = 1
RIGHT_CHEEK = 234  # outermost face-oval point at eye height, subject's right (image left)
LEFT_CHEEK = 454
FOREHEAD_TOP = 10
CHIN = 152

# The 68 iBUG/dlib points approximated by single mesh points, in iBUG order (jaw, brows, nose, eyes, mouth).
MP_TO_IBUG68 = np.array(
    [127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
     70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
     168, 197, 5, 4, 75, 97, 2, 326, 305,
     33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
     61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
     78, 82, 13, 312, 308, 317, 14, 87]
)  # fmt: skip
