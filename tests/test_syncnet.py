"""SyncNet LSE-C/LSE-D with a random-weight file the tests write: loading, MFCCs, face crops, offsets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch

from evaluation.syncnet import (
    PAD_VALUE,
    SyncNet,
    face_crops,
    find_syncnet_weights,
    load_syncnet,
    lse_report,
    lse_scores,
    syncnet_mfcc,
)
from utils.cli import UserError

# syncnet_python SyncNetModel.S: Sequential index -> (kind, weight shape); batch norms follow each conv
_AUD = {0: (64, 1, 3, 3), 4: (192, 64, 3, 3), 8: (384, 192, 3, 3), 11: (256, 384, 3, 3)}
_AUD |= {14: (256, 256, 3, 3), 18: (512, 256, 5, 4)}
_LIP = {0: (96, 3, 5, 7, 7), 4: (256, 96, 1, 5, 5), 8: (256, 256, 1, 3, 3), 11: (256, 256, 1, 3, 3)}
_LIP |= {14: (256, 256, 1, 3, 3), 18: (512, 256, 1, 6, 6)}
_FC = {0: (512, 512), 3: (1024, 512)}


def original_state(seed: int = 0, with_counters: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the key names and shapes of syncnet_python's S (BN after conv i is at i+1)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def layer(name: str, shape: tuple[int, ...], bn: bool) -> None:
        """Weight, bias and (for convolutions and the first FC layer) the following batch norm."""
        fan_in = math.prod(shape[1:])
        state[f"{name}.weight"] = torch.randn(shape, generator=gen) / fan_in**0.5
        state[f"{name}.bias"] = 0.1 * torch.randn(shape[0], generator=gen)
        if bn:
            prefix, index = name.rsplit(".", 1)
            bn_name = f"{prefix}.{int(index) + 1}"
            state[f"{bn_name}.weight"] = 1 + 0.1 * torch.randn(shape[0], generator=gen)
            state[f"{bn_name}.bias"] = 0.1 * torch.randn(shape[0], generator=gen)
            state[f"{bn_name}.running_mean"] = 0.1 * torch.randn(shape[0], generator=gen)
            state[f"{bn_name}.running_var"] = 0.5 + torch.rand(shape[0], generator=gen)
            if with_counters:
                state[f"{bn_name}.num_batches_tracked"] = torch.tensor(100)

    for net, spec in (("netcnnaud", _AUD), ("netcnnlip", _LIP), ("netfcaud", _FC), ("netfclip", _FC)):
        for index, shape in spec.items():
            layer(f"{net}.{index}", shape, bn=not (net.startswith("netfc") and index == 3))
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight syncnet_v2.model-style state dict on disk."""
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(original_state(), path)
    return path


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise in [-1,1] [N]: distinct MFCC windows everywhere."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    envelope = 0.2 + 0.15 * np.sin(2 * np.pi * 3.0 * t) + 0.05 * rng.random(t.size)
    return (envelope * rng.standard_normal(t.size) * 0.3).clip(-1, 1)


def test_loads_original_key_names_strictly(weights: Path, tmp_path: Path) -> None:
    net = load_syncnet(weights)
    assert isinstance(net, SyncNet) and not net.training
    state = original_state()
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert set(net.state_dict()) == set(state)
    assert net.forward_audio(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
    assert net.forward_lips(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)
    # SyncNetInstance's own state dict prefixes "__S__."; pre-0.4 files lack BN step counters
    wrapped = tmp_path / "wrapped.model"
    torch.save({f"__S__.{k}": v for k, v in original_state(with_counters=False).items()}, wrapped)
    assert torch.equal(load_syncnet(wrapped).netcnnlip[18].weight, state["netcnnlip.18.weight"])


@pytest.mark.parametrize("case", ["renamed", "shape", "text", "missing", "list"])
def test_bad_weight_files_give_one_line_user_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "syncnet_v2.model"
    state = original_state()
    if case == "renamed":
        state["netcnnaud.0.kernel"] = state.pop("netcnnaud.0.weight")
        torch.save(state, path)
    elif case == "shape":
        state["netfclip.3.weight"] = torch.zeros(512, 512)
        torch.save(state, path)
    elif case == "text":
        path.write_text("this is not a torch file\n")
    elif case == "list":
        torch.save([torch.zeros(3)], path)
    with pytest.raises(UserError) as err:
        load_syncnet(path)
    message = str(err.value)
    assert "\n" not in message and "syncnet_v2.model" in message
    if case == "renamed":
        assert "netcnnaud.0.weight" in message and "netcnnaud.0.kernel" in message
    if case == "shape":
        assert "netfclip.3.weight" in message


def reference_mfcc(x: np.ndarray) -> np.ndarray:
    """python_speech_features.mfcc's formula written out loop by loop, on 16 kHz int16-unit samples."""
    x = np.concatenate([[x[0]], x[1:] - 0.97 * x[:-1]])
    n = 1 + math.ceil((len(x) - 400) / 160)
    x = np.concatenate([x, np.zeros((n - 1) * 160 + 400 - len(x))])
    mel = lambda hz: 2595 * np.log10(1 + hz / 700)
    edges = [math.floor(513 * 700 * (10 ** (m / 2595) - 1) / 16000) for m in np.linspace(0, mel(8000), 28)]
    fb = np.zeros((26, 257))
    for j in range(26):
        for i in range(edges[j], edges[j + 1]):
            fb[j, i] = (i - edges[j]) / (edges[j + 1] - edges[j])
        for i in range(edges[j + 1], edges[j + 2]):
            fb[j, i] = (edges[j + 2] - i) / (edges[j + 2] - edges[j + 1])
    out = np.zeros((n, 13))
    for f in range(n):
        frame = np.zeros(512)
        frame[:400] = x[f * 160 : f * 160 + 400]
        power = np.abs(np.fft.fft(frame)[:257]) ** 2 / 512
        cep = scipy.fft.dct(np.log(np.maximum(fb @ power, np.finfo(float).eps)), type=2, norm="ortho")[:13]
        cep = cep * np.array([1 + 11 * math.sin(math.pi * k / 22) for k in range(13)])
        cep[0] = math.log(max(power.sum(), np.finfo(float).eps))
        out[f] = cep
    return out


def test_mfcc_matches_reference_and_tracks_loudness() -> None:
    wav = speech_like(0.73, seed=3)
    mfcc = syncnet_mfcc(wav, 16000)
    n = 1 + math.ceil((wav.size - 400) / 160)
    assert mfcc.shape == (n, 13)
    np.testing.assert_allclose(mfcc, reference_mfcc(np.round(wav * 32768)), rtol=1e-9, atol=1e-9)
    # int16 PCM is read in its own units; a 2x louder signal moves the energy column by log(4) and leaves the
    # cepstra (up to int16 rounding, which the lifter magnifies in the weak lowest mel band)
    pcm = np.round(wav * 32768).astype(np.int16)
    np.testing.assert_allclose(syncnet_mfcc(pcm, 16000), mfcc, atol=1e-9)
    louder = syncnet_mfcc(wav * 2, 16000)
    np.testing.assert_allclose(louder[:, 0] - mfcc[:, 0], math.log(4), atol=1e-3)
    np.testing.assert_allclose(louder[:, 1:], mfcc[:, 1:], atol=0.02)
    # c0 follows the loudness envelope: log energy of each 25 ms frame of the raw signal
    frame_energy = np.log(np.convolve(wav**2, np.ones(400), "valid")[::160])
    assert np.corrcoef(mfcc[: len(frame_energy), 0], frame_energy)[0, 1] > 0.99
    # other rates are resampled to 16 kHz first: same 100 Hz frame count, and a chord of 40 tones spread over
    # 0.1-6.5 kHz (every mel band but the top one non-empty) keeps its MFCCs
    freqs = np.geomspace(100, 6500, 40)[None, :]
    chord = lambda sr: 0.01 * np.sin(
        2 * np.pi * freqs * np.arange(sr // 2)[:, None] / sr + np.arange(40)
    ).sum(1)
    at16, at48 = syncnet_mfcc(chord(16000), 16000), syncnet_mfcc(chord(48000), 48000)
    assert at48.shape == at16.shape
    np.testing.assert_allclose(at48[2:-2], at16[2:-2], atol=0.05)


def face_scene(t: int = 15, size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T,size,size,3] with a red 60x60 'face' at (70..130, 50..110) and landmarks filling it."""
    frames = np.full((t, size, size, 3), 30, np.uint8)
    frames[:, 50:110, 70:130] = (220, 20, 20)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (478, 2)) * 60 + [70, 50]
    pts[:4] = [[70, 50], [130, 50], [70, 110], [130, 110]]  # box corners: x 70..130, y 50..110
    return frames, np.repeat(pts[None], t, axis=0)


def test_face_crops_geometry_gaps_and_smoothing() -> None:
    frames, lms = face_scene()
    crops = face_crops(frames, lms)
    assert crops.shape == (15, 224, 224, 3) and crops.dtype == np.uint8
    # square box s=30 around (100, 80): rows 50..134, columns 58..142; the face fills the top 60/84 rows
    crop = crops[0].astype(int)
    assert (crop[100, 112] == (220, 20, 20)).all()  # face
    assert (crop[200, 112] == 30).all()  # below the chin
    assert (crop[100, 10] == 30).all() and (crop[100, 214] == 30).all()  # beside the face
    assert abs(int((crop[:, 112, 0] > 120).sum()) - round(224 * 60 / 84)) <= 2
    # a frame without a face takes its neighbours' box; a one-frame jump of the box is smoothed away
    gap, jump = lms.copy(), lms.copy()
    gap[7] = np.nan
    jump[7] += 25
    np.testing.assert_array_equal(face_crops(frames, gap), crops)
    np.testing.assert_array_equal(face_crops(frames, jump), crops)
    # near the border the crop is padded with the original's grey
    edge = face_crops(frames, lms - [70, 50])[0]  # box x 0..60: the crop starts 12 px left of the frame
    assert (edge[:100, :25] == PAD_VALUE).all() and (edge[:100, 40:] != PAD_VALUE).all()
    with pytest.raises(UserError, match="no face"):
        face_crops(frames, np.full_like(lms, np.nan))


class IndexNet(SyncNet):
    """Embeddings that encode position: lips of window i -> e_i, audio of window v -> e_(v+k)."""

    def __init__(self, mfcc: np.ndarray, k: int) -> None:
        """`mfcc` [n,13] of the clip's audio, to recognise which window forward_audio is given."""
        super().__init__()
        self.mfcc = torch.from_numpy(mfcc.T.astype(np.float32))
        self.k = k

    def forward_lips(self, frames: torch.Tensor) -> torch.Tensor:
        """Crop t is filled with the value t: window index from its first pixel."""
        index = frames[:, 0, 0, 0, 0].round().long()
        return torch.nn.functional.one_hot(index + 100, 1024).float()

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """The window's video frame v (its MFCC columns start at 4v), mapped to e_(v+k)."""
        starts = range(0, self.mfcc.shape[1] - 19, 4)
        index = [
            min(starts, key=lambda s: float((self.mfcc[:, s : s + 20] - window[0]).abs().sum())) // 4
            for window in mfcc
        ]
        return torch.nn.functional.one_hot(torch.tensor(index) + 100 + self.k, 1024).float()


@pytest.mark.parametrize("k", [3, -2, 0])
def test_offset_search_finds_the_constructed_shift(k: int) -> None:
    wav = speech_like(1.2, seed=1)
    crops = np.broadcast_to(np.arange(30, dtype=np.uint8)[:, None, None, None], (30, 224, 224, 3)).copy()
    net = IndexNet(syncnet_mfcc(wav, 16000), k)
    scores = lse_scores(net, crops, wav, 16000, batch_size=7, max_offset=15)
    windows = 30 - 5  # the original scores min_length - 5 windows
    assert scores["frames_used"] == windows
    assert scores["offset_frames"] == k  # lips of frame t match the audio of frame t - offset
    # at the true offset every window matches exactly, except the |k| whose partner lies outside the clip:
    # the original compares those with a zero vector (distance 1 here)
    assert scores["lse_d"] == pytest.approx(abs(k) / windows, abs=1e-3)
    assert scores["lse_c"] > 0.5


def test_random_net_scores_are_finite(weights: Path) -> None:
    net = load_syncnet(weights)
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (1, 224, 224, 3))
    crops = (base + rng.integers(-20, 20, (26, 224, 224, 3))).clip(0, 255).astype(np.uint8)
    wav = speech_like(1.04, seed=2)
    scores = lse_scores(net, crops, wav, 16000, max_offset=15)
    assert set(scores) == {"lse_c", "lse_d", "offset_frames", "frames_used"}
    assert math.isfinite(scores["lse_c"]) and math.isfinite(scores["lse_d"])
    assert scores["lse_c"] >= 0 and scores["lse_d"] > 0
    assert -15 <= scores["offset_frames"] <= 15 and scores["frames_used"] == 21
    # eval-mode batch norm: a window's embedding does not depend on the rest of its batch
    windows = torch.from_numpy(np.stack([crops[i : i + 5] for i in range(3)])).permute(0, 4, 1, 2, 3).float()
    together = net.forward_lips(windows)
    alone = torch.cat([net.forward_lips(windows[[i]]) for i in range(3)])
    assert float((together - alone).norm() / alone.norm()) < 1e-5  # float32 rounding only
    with pytest.raises(UserError, match="too short"):
        lse_scores(net, crops[:20], wav, 16000)
    with pytest.raises(UserError, match="25 fps"):
        lse_scores(net, crops, wav, 16000, fps=30.0)


def test_report_finds_cached_weights_or_says_not_measured(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EGSTALKER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    frames, lms = face_scene(t=26)
    wav = speech_like(1.04, seed=4)
    assert find_syncnet_weights(None) is None
    report = lse_report(frames, lms, wav, 16000, 25.0, None)
    assert report["lse_c"] is None and report["lse_d"] is None
    assert report["status"].startswith("not measured") and "syncnet_v2.model" in report["status"]
    with pytest.raises(UserError, match="not found"):
        find_syncnet_weights(tmp_path / "nowhere.model")
    cached = tmp_path / "cache" / "syncnet" / "syncnet_v2.model"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights.read_bytes())
    assert find_syncnet_weights(None) == cached
    report = lse_report(frames, lms, wav, 16000, 25.0, None)
    assert report["weights"] == str(cached) and math.isfinite(report["lse_d"]) and report["lse_c"] >= 0
    assert abs(report["offset_frames"]) <= 15
