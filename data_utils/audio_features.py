"""Audio feature extractors aligned to video frames: windows [T, C, W] of W steps (2 steps per frame)."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from math import gcd
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from scipy import signal

from data_utils.audio_io import SAMPLE_RATE
from utils.cli import UserError

STEPS_PER_FRAME = 2
STD_FLOOR = 1e-5  # smallest per-channel std a feature is divided by


class AudioFeatureExtractor(Protocol):
    """Turns a waveform into per-video-frame feature windows."""

    name: str
    categorical: bool  # one-hot classes (not standardised per channel: feature_norm)

    def settings(self) -> dict:
        """Return JSON-serialisable settings; get_extractor(name, **settings) rebuilds the extractor."""
        ...

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Return features [T, C, W] float32 for mono `wav` [n] at `sr` Hz and video at `fps`."""
        ...


def num_video_frames(num_samples: int, sr: int, fps: float, num_frames: int | None = None) -> int:
    """Return T: `num_frames` if given, else round(duration * fps)."""
    return int(num_frames) if num_frames is not None else round(num_samples / sr * fps)


def resample(wav: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Return mono `wav` [n] resampled from `sr` to `target` Hz as float32 [round(n*target/sr)]."""
    wav = np.asarray(wav, dtype=np.float32)
    if sr == target:
        return wav
    g = gcd(int(sr), int(target))
    return signal.resample_poly(wav, target // g, int(sr) // g).astype(np.float32)


def step_times(num_frames: int, fps: float) -> np.ndarray:
    """Return the centre times (s) [T*2] of the feature steps: two per video frame, splitting it in halves."""
    return (np.arange(num_frames * STEPS_PER_FRAME) + 0.5) / (STEPS_PER_FRAME * fps)


def feature_norm(extractor: str, train: np.ndarray) -> dict:
    """The per-channel {"mean","std"} ([C] lists) that features of `extractor` are standardised by, from the
    training clip's windows [T,C,W]: their statistics (std floored at STD_FLOOR), or mean 0 and std 1 for
    one-hot phones, since a few seconds of one speaker never hear every phone and a channel constant in
    training would blow up (by 1 / STD_FLOOR) when another voice says it. Features of an unregistered
    extractor (aud_<name>.npy made elsewhere) are standardised."""
    channels = train.shape[1]
    if getattr(_REGISTRY.get(extractor), "categorical", False):
        return {"mean": [0.0] * channels, "std": [1.0] * channels}
    return {
        "mean": train.mean(axis=(0, 2)).tolist(),
        "std": np.maximum(train.std(axis=(0, 2)), STD_FLOOR).tolist(),
    }


def normalise_windows(windows: np.ndarray, norm: dict) -> np.ndarray:
    """Feature windows [T,C,W] standardised per channel by `norm` {"mean","std"} ([C] lists, as a checkpoint
    records them) -> float32 [T,C,W]; the one normalisation of training, predict.sh and the live server."""
    mean, std = np.asarray(norm["mean"])[:, None], np.asarray(norm["std"])[:, None]
    return ((windows - mean) / std).astype(np.float32)


def window_offsets(window: int) -> np.ndarray:
    """Step offsets [window] of a frame's window relative to its first step (2 * frame)."""
    return np.arange(window) - window // 2 + 1


def window_steps(frames: np.ndarray, window: int, num_steps: int) -> np.ndarray:
    """Return the feature steps [k, window] of the windows of `frames` [k], clipped to [0, num_steps - 1]."""
    offsets = window_offsets(window)
    return np.clip(np.asarray(frames)[:, None] * STEPS_PER_FRAME + offsets[None, :], 0, num_steps - 1)


def frame_windows(steps: np.ndarray, window: int) -> np.ndarray:
    """Turn per-step features [2T, C] into windows [T, C, window] centred on each frame (edge-padded)."""
    num_frames = len(steps) // STEPS_PER_FRAME
    if num_frames == 0:
        return np.zeros((0, steps.shape[1], window), dtype=np.float32)
    idx = window_steps(np.arange(num_frames), window, len(steps))
    return np.ascontiguousarray(steps[idx].transpose(0, 2, 1), dtype=np.float32)


def interpolate_steps(feats: np.ndarray, src_times: np.ndarray, dst_times: np.ndarray) -> np.ndarray:
    """Linearly interpolate features [n, C] sampled at `src_times` [n] to `dst_times` [m] -> [m, C]."""
    pos = np.interp(dst_times, src_times, np.arange(len(src_times), dtype=np.float64))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(src_times) - 1)
    frac = (pos - lo)[:, None]
    return (feats[lo] * (1.0 - frac) + feats[hi] * frac).astype(np.float32)


def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 20.0, fmax: float | None = None
) -> np.ndarray:
    """Return HTK-style triangular mel filters [n_mels, n_fft//2+1]."""
    fmax = fmax or sr / 2
    mel_pts = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    hz = 700 * (10 ** (mel_pts / 2595) - 1)
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lower = (bins[None, :] - hz[:-2, None]) / (hz[1:-1, None] - hz[:-2, None])
    upper = (hz[2:, None] - bins[None, :]) / (hz[2:, None] - hz[1:-1, None])
    return np.clip(np.minimum(lower, upper), 0.0, None).astype(np.float32)


def log_mel(wav: np.ndarray, sr: int, centres: np.ndarray, n_fft: int, n_mels: int) -> np.ndarray:
    """Return log-mel energies [len(centres), n_mels] of `wav` [n]; Hann windows centred on `centres`."""
    half = n_fft // 2
    start = np.round(centres).astype(np.int64)
    right = max(0, int(start.max(initial=0)) + n_fft - half - len(wav))
    padded = np.pad(np.asarray(wav, dtype=np.float32), (half, right))
    frames = padded[start[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return np.log(power @ mel_filterbank(sr, n_fft, n_mels).T + 1e-6).astype(np.float32)


def _settings_of(extractor: Any) -> dict:
    """Return the constructor fields of a dataclass extractor as a dict."""
    return {f.name: getattr(extractor, f.name) for f in fields(extractor) if f.init}


@dataclass
class LogMelExtractor:
    """Log-mel spectrogram, 2 steps per video frame, normalised per channel over the clip; no weights."""

    n_mels: int = 32
    window: int = 16
    n_fft: int = 512
    name: ClassVar[str] = "logmel"
    categorical: ClassVar[bool] = False

    def settings(self) -> dict:
        """Return the settings dict (n_mels, window, n_fft)."""
        return _settings_of(self)

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Return normalised log-mel windows [T, n_mels, window] float32."""
        t = num_video_frames(len(wav), sr, fps, num_frames)
        mel = log_mel(
            resample(wav, sr), SAMPLE_RATE, step_times(t, fps) * SAMPLE_RATE, self.n_fft, self.n_mels
        )
        mel = (mel - mel.mean(0)) / (mel.std(0) + 1e-5)
        return frame_windows(mel, self.window)


def _receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """Return (receptive field, total stride) in samples of a stack of 1-D convolutions."""
    rf = 1
    for k, s in zip(reversed(kernels), reversed(strides), strict=True):
        rf = (rf - 1) * s + k
    return rf, int(np.prod(strides))


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "pytorch_model.bin"]


def model_folder(model_dir: str) -> Path:
    """The local folder of `model_dir`: the path itself, or, for a HuggingFace hub name that is no local path
    (e.g. facebook/hubert-base-ls960), its files fetched once into the HuggingFace cache (online the first
    time); UserError when they cannot be fetched."""
    folder = Path(model_dir).expanduser()
    if not model_dir or folder.exists() or not HUB_NAME.match(model_dir):
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_dir, allow_patterns=HUB_FILES))
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot fetch '{model_dir}' from the HuggingFace hub ({type(err).__name__}); the first use "
            "needs the internet (later ones use the cache), or pass a local model folder"
        ) from err


@dataclass
class HubertExtractor:
    """Hidden states of a user-supplied HuggingFace HuBERT model (model_dir), 2 steps per video frame."""

    model_dir: str = ""
    layer: int = -1
    window: int = 16
    chunk_seconds: float = 20.0
    name: ClassVar[str] = "hubert"
    categorical: ClassVar[bool] = False
    model_class: ClassVar[str] = "HubertModel"
    _model: Any = field(init=False, repr=False, compare=False)
    _normalize: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Load the model from model_dir (a local folder, or a hub name fetched once); UserError if it is
        missing or of another kind."""
        folder = model_folder(self.model_dir)
        usage = (
            f"the {self.name} extractor needs model_dir=<HuggingFace folder with config.json and weights, "
            "or a hub name such as facebook/hubert-base-ls960>"
        )
        if not self.model_dir or not (folder / "config.json").is_file():
            raise UserError(f"{usage}; '{self.model_dir}' has no config.json")
        model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
        if model_type != self.name:
            raise UserError(
                f"model_dir '{folder}' holds a '{model_type}' model; {usage} of type '{self.name}'"
            )
        import transformers

        try:
            model = getattr(transformers, self.model_class).from_pretrained(
                str(folder), local_files_only=True
            )
        except (OSError, ValueError) as err:
            raise UserError(
                f"cannot load the {self.name} model from model_dir '{folder}' ({err}); {usage}"
            ) from err
        self._model = model.eval()
        pre = folder / "preprocessor_config.json"
        self._normalize = (
            bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True
        )

    def settings(self) -> dict:
        """Return the settings dict (model_dir, layer, window, chunk_seconds)."""
        return _settings_of(self)

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Return hidden-state windows [T, hidden_size, window] float32."""
        import torch

        t = num_video_frames(len(wav), sr, fps, num_frames)
        audio = resample(wav, sr)
        if self._normalize:
            audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        cfg = self._model.config
        rf, stride = _receptive_field(list(cfg.conv_kernel), list(cfg.conv_stride))
        chunk = max(1, round(self.chunk_seconds * SAMPLE_RATE / stride)) * stride
        extra = max(rf, stride) - stride
        audio = np.pad(audio, (0, (-len(audio)) % stride + extra))
        hidden = []
        with torch.inference_mode():
            for a in range(0, len(audio) - extra, chunk):
                piece = torch.from_numpy(np.ascontiguousarray(audio[a : a + chunk + extra]))[None]
                out = self._model(piece, output_hidden_states=True)
                hidden.append(out.hidden_states[self.layer][0].float().numpy())
        feats = np.concatenate(hidden)
        src_times = (np.arange(len(feats)) * stride + rf / 2) / SAMPLE_RATE
        return frame_windows(interpolate_steps(feats, src_times, step_times(t, fps)), self.window)


@dataclass
class Wav2Vec2Extractor(HubertExtractor):
    """Hidden states of a user-supplied HuggingFace wav2vec 2.0 model (model_dir), 2 steps per video frame."""

    name: ClassVar[str] = "wav2vec2"
    model_class: ClassVar[str] = "Wav2Vec2Model"


def mfcc(wav: np.ndarray, n_coeffs: int, hop: int = 160, n_fft: int = 512) -> np.ndarray:
    """Return MFCCs [n_steps, n_coeffs] of 16 kHz `wav` [n], a step every `hop` samples (DCT of log-mel)."""
    from scipy.fft import dct

    centres = np.arange(len(wav) // hop + 1) * hop
    mel = log_mel(wav, SAMPLE_RATE, centres, n_fft, max(40, n_coeffs))
    return dct(mel, type=2, axis=1, norm="ortho")[:, :n_coeffs].astype(np.float32)


@dataclass
class DeepSpeechExtractor:
    """Character logits of a user-supplied DeepSpeech-style ONNX model (model_path) over MFCC input frames."""

    model_path: str = ""
    window: int = 16
    name: ClassVar[str] = "deepspeech"
    categorical: ClassVar[bool] = False
    _session: Any = field(init=False, repr=False, compare=False)
    _n_features: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Open the ONNX model; UserError if model_path is missing or not a [1, time, features] model."""
        usage = "the deepspeech extractor needs model_path=<ONNX file: [1, time, features] -> [1, time, 29]>"
        path = Path(self.model_path).expanduser()
        if not self.model_path or not path.is_file():
            raise UserError(f"{usage}; model_path '{self.model_path}' not found")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped errors on bad files
            raise UserError(f"cannot load model_path '{path}' as ONNX ({err}); {usage}") from err
        shape = self._session.get_inputs()[0].shape
        if len(shape) != 3 or not isinstance(shape[2], int):
            raise UserError(f"model_path '{path}' takes input of shape {shape}; {usage}")
        self._n_features = shape[2]

    def settings(self) -> dict:
        """Return the settings dict (model_path, window)."""
        return _settings_of(self)

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Return logit windows [T, n_chars, window] float32 (n_chars = 29 for DeepSpeech)."""
        t = num_video_frames(len(wav), sr, fps, num_frames)
        hop = SAMPLE_RATE // 100
        feats = mfcc(resample(wav, sr), self._n_features, hop)
        name = self._session.get_inputs()[0].name
        logits = self._session.run(None, {name: feats[None]})[0]
        if logits.ndim != 3:
            raise UserError(
                f"model_path '{self.model_path}' returned shape {logits.shape}; expected [1, time, 29]"
            )
        logits = logits[0].astype(np.float32)
        duration = len(feats) * hop / SAMPLE_RATE
        src_times = (np.arange(len(logits)) + 0.5) * duration / len(logits)
        return frame_windows(interpolate_steps(logits, src_times, step_times(t, fps)), self.window)


PHONES = tuple(
    (
        "SIL AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG "
        "OW OY P R S SH T TH UH UW V W Y Z ZH"
    ).split()
)
PHONE_RATE = 100
# pocketsphinx's all-phone search collapsed into one phone for the rest of an utterance with beams narrowed
# to 1e-10 (a real 60 s clip decoded whole gave one "HH" from 21.6 s to the end; an 8 s one, decoded in one
# piece, one "G" for its last 3.9 s). The decoder keeps pocketsphinx's default beams
# (1e-48), with which no run of one phone but silence lasts over 0.31 s on the five real clips and three
# speakers of ../shared/data, for a third more CPU. Audio is still decoded in utterances of about
# PHONE_CHUNK_SECONDS, each cut at the quietest 10 ms within PHONE_CUT_SEARCH_SECONDS before its nominal end,
# which bounds the decoder's memory and time per utterance.
PHONE_CHUNK_SECONDS = 10.0
PHONE_CUT_SEARCH_SECONDS = 1.0


def phone_cuts(wav: np.ndarray) -> list[int]:
    """Utterance boundaries of 16 kHz `wav` [n] in 10 ms phone frames, [0, ..., ceil(n / 160)]: about
    PHONE_CHUNK_SECONDS apart, each at the quietest 10 ms in the PHONE_CUT_SEARCH_SECONDS before its place."""
    hop = SAMPLE_RATE // PHONE_RATE
    total = -(-len(wav) // hop)
    energy = (
        np.add.reduceat(np.square(wav, dtype=np.float64), np.arange(0, len(wav), hop)) if len(wav) else []
    )
    chunk, search = round(PHONE_CHUNK_SECONDS * PHONE_RATE), round(PHONE_CUT_SEARCH_SECONDS * PHONE_RATE)
    cuts = [0]
    while total - cuts[-1] > chunk:
        nominal = cuts[-1] + chunk
        cuts.append(nominal - search + int(np.argmin(energy[nominal - search : nominal])))
    return [*cuts, total]


# Visemes: the phones grouped by the mouth shape that makes them (after MPEG-4's visemes; the vowels by jaw
# opening and lip rounding). Few seconds of one speaker hear every group but not every phone, so another
# voice's phones map onto classes the predictor has learnt.
VISEME_GROUPS = (
    ("rest", "SIL"),
    ("lips_closed", "P B M"),
    ("lip_teeth", "F V"),
    ("rounded", "W UW UH OW OY"),
    ("open", "AA AE AH AO AW AY"),
    ("mid", "EH ER EY"),
    ("spread", "IY IH Y"),
    ("tongue_teeth", "TH DH"),
    ("alveolar", "T D N L S Z"),
    ("postalveolar", "CH JH SH ZH"),
    ("velar", "K G NG HH"),
    ("r", "R"),
)
VISEMES = tuple(name for name, _ in VISEME_GROUPS)


def viseme_of_phone() -> np.ndarray:
    """The index into VISEMES [len(PHONES)] of each phone of PHONES."""
    of = {phone: k for k, (_, phones) in enumerate(VISEME_GROUPS) for phone in phones.split()}
    return np.array([of[p] for p in PHONES], dtype=np.int64)


_PHONE_DECODERS = threading.local()  # one pocketsphinx decoder per thread (PhonemeExtractor._decoder)


@dataclass
class PhonemeExtractor:
    """One-hot phone timings [T, 40, W] from pocketsphinx's English phone recogniser (model in its wheel)."""

    window: int = 16
    name: ClassVar[str] = "phonemes"
    categorical: ClassVar[bool] = True
    classes: ClassVar[tuple[str, ...]] = PHONES

    def __post_init__(self) -> None:
        """Check that pocketsphinx is installed; UserError saying how to install it otherwise."""
        if importlib.util.find_spec("pocketsphinx") is None:
            raise UserError(
                "the phonemes extractor needs pocketsphinx; install it with: pip install pocketsphinx"
            )

    def settings(self) -> dict:
        """Return the settings dict (window)."""
        return _settings_of(self)

    def phone_labels(self, wav: np.ndarray) -> np.ndarray:
        """Return the index into PHONES [n / 160 + 1] of the phone heard in each 10 ms of 16 kHz `wav` [n],
        decoded utterance by utterance (phone_cuts)."""
        labels = np.zeros(len(wav) * PHONE_RATE // SAMPLE_RATE + 1, dtype=np.int64)
        cuts = phone_cuts(wav)
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            part = self._utterance_labels(
                wav[start * SAMPLE_RATE // PHONE_RATE : end * SAMPLE_RATE // PHONE_RATE]
            )
            labels[start : start + len(part)] = part[: len(labels) - start]
        return labels

    def _decoder(self) -> Any:
        """This thread's pocketsphinx phone decoder, built on first use (about 0.2 s of CPU) and else reset to
        its initial feature state, so that every utterance decodes as by a new decoder (the cepstral mean
        would otherwise carry over from the previous one)."""
        decoder = getattr(_PHONE_DECODERS, "decoder", None)
        if decoder is not None:
            decoder.reinit_feat()
            return decoder
        from pocketsphinx import Decoder, get_model_path

        lm = Path(get_model_path()) / "en-us" / "en-us-phone.lm.bin"
        _PHONE_DECODERS.decoder = Decoder(  # default beams: see the note above PHONE_CHUNK_SECONDS
            allphone=str(lm), lw=2.0, pip=0.3, samprate=SAMPLE_RATE, loglevel="FATAL"
        )
        return _PHONE_DECODERS.decoder

    def _utterance_labels(self, wav: np.ndarray) -> np.ndarray:
        """Phone indices [n / 160 + 1] of 16 kHz `wav` [n] decoded as one utterance."""
        decoder = self._decoder()
        decoder.start_utt()
        dither = np.random.default_rng(0).normal(
            0.0, 5e-4, len(wav)
        )  # digital silence otherwise decodes as "S"
        decoder.process_raw((np.clip(wav + dither, -1.0, 1.0) * 32767).astype("<i2").tobytes(), full_utt=True)
        decoder.end_utt()
        labels = np.zeros(len(wav) * PHONE_RATE // SAMPLE_RATE + 1, dtype=np.int64)
        for seg in decoder.seg():
            if seg.word in PHONES:
                labels[seg.start_frame : seg.end_frame + 1] = PHONES.index(seg.word)
        return labels

    def class_of_phone(self) -> np.ndarray:
        """The index into `classes` [len(PHONES)] of each phone (here the phone itself)."""
        return np.arange(len(PHONES))

    def step_features(self, wav: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
        """One-hot classes [2 * num_frames, len(classes)] of the phone heard at each feature step of 16 kHz
        `wav` [n] (silence/noise = SIL)."""
        labels = self.class_of_phone()[self.phone_labels(wav)]
        idx = np.clip((step_times(num_frames, fps) * PHONE_RATE).astype(np.int64), 0, len(labels) - 1)
        return np.eye(len(self.classes), dtype=np.float32)[labels[idx]]

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Return windows [T, C, window] float32 of step_features (C: len(classes), one-hot)."""
        t = num_video_frames(len(wav), sr, fps, num_frames)
        return frame_windows(self.step_features(resample(wav, sr), fps, t), self.window)


def step_loudness(wav: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """The loudness [2 * num_frames] of 16 kHz `wav` [n] at each feature step: its log-mel energy averaged
    over the bands, standardised over the whole audio (which removes the recording's gain)."""
    centres = step_times(num_frames, fps) * SAMPLE_RATE
    mel = log_mel(wav, SAMPLE_RATE, centres, LogMelExtractor.n_fft, LogMelExtractor.n_mels).mean(axis=1)
    return ((mel - mel.mean()) / (mel.std() + 1e-5)).astype(np.float32)


@dataclass
class VisemeExtractor(PhonemeExtractor):
    """One-hot viseme timings and the loudness [T, 13, W]: pocketsphinx's phones grouped by mouth shape
    (VISEME_GROUPS) and step_loudness, since how far a mouth opens for a vowel grows with how loud it is."""

    name: ClassVar[str] = "visemes"
    classes: ClassVar[tuple[str, ...]] = VISEMES

    def class_of_phone(self) -> np.ndarray:
        """The index into VISEMES [len(PHONES)] of each phone."""
        return viseme_of_phone()

    def step_features(self, wav: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
        """The viseme one-hots [2 * num_frames, 12] of 16 kHz `wav` [n] with its loudness as a 13th column."""
        loudness = step_loudness(wav, fps, num_frames)
        return np.concatenate([super().step_features(wav, fps, num_frames), loudness[:, None]], axis=1)


_REGISTRY: dict[str, type] = {
    cls.name: cls
    for cls in (
        LogMelExtractor,
        HubertExtractor,
        Wav2Vec2Extractor,
        DeepSpeechExtractor,
        PhonemeExtractor,
        VisemeExtractor,
    )
}


def available_extractors() -> list[str]:
    """Return the names accepted by get_extractor."""
    return sorted(_REGISTRY)


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """Convert a setting given as text (e.g. from the command line) to the type of its default."""
    if not isinstance(value, str) or isinstance(default, str) or default is MISSING:
        return value
    try:
        return type(default)(value)
    except ValueError as err:
        raise UserError(
            f"setting {key}={value!r} of audio extractor '{name}' must be a {type(default).__name__}"
        ) from err


def get_extractor(name: str, **settings: Any) -> AudioFeatureExtractor:
    """Build the extractor registered as `name` with `settings`; UserError on unknown names or settings."""
    if name not in _REGISTRY:
        raise UserError(
            f"unknown audio extractor '{name}'; choose one of: {', '.join(available_extractors())}"
        )
    cls = _REGISTRY[name]
    defaults = {f.name: f.default for f in fields(cls) if f.init}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise UserError(
            f"unknown setting(s) {', '.join(unknown)} for audio extractor '{name}'; "
            f"valid settings: {', '.join(defaults)}"
        )
    return cls(**{k: _coerce(name, k, v, defaults[k]) for k, v in settings.items()})


def stream_features(
    extractor: AudioFeatureExtractor,
    chunks: Iterable[np.ndarray],
    sr: int,
    fps: float,
    num_frames: int,
    segment_frames: int = 1500,
    context_frames: int = 50,
) -> Iterator[np.ndarray]:
    """Yield features [k, C, W] for consecutive frame ranges covering `num_frames` frames of audio arriving
    as mono `chunks` [n_i] at `sr` Hz, holding at most one segment plus context in memory.

    Each segment of `segment_frames` frames is extracted with `context_frames` frames of audio on either side
    (so windows and the extractor's normalisation see its neighbourhood); a clip of at most segment_frames
    frames gives exactly extractor.extract(whole clip).
    """
    samples_per_frame = sr / fps
    pending = iter(chunks)
    buffer, buffer_start = np.zeros(0, np.float32), 0  # buffer[0] is sample `buffer_start` of the clip
    for first in range(0, num_frames, segment_frames):
        last = min(first + segment_frames, num_frames)
        lo, hi = max(0, first - context_frames), min(num_frames, last + context_frames)
        end = round(hi * samples_per_frame) if hi < num_frames else None
        parts = [buffer]
        have = buffer_start + len(buffer)
        while end is None or have < end:
            chunk = next(pending, None)
            if chunk is None:
                break
            parts.append(np.asarray(chunk, np.float32))
            have += len(chunk)
        buffer = np.concatenate(parts)
        start = round(lo * samples_per_frame) - buffer_start
        segment = buffer[start : None if end is None else end - buffer_start]
        feats = extractor.extract(segment, sr, fps, hi - lo)
        yield feats[first - lo : last - lo]
        keep_from = round(max(0, last - context_frames) * samples_per_frame) - buffer_start
        buffer, buffer_start = buffer[keep_from:], buffer_start + keep_from
