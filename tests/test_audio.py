"""Tests of audio decoding and writing and of the audio feature extractors."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from data_utils.audio_features import (
    LogMelExtractor,
    available_extractors,
    frame_windows,
    get_extractor,
    num_video_frames,
    stream_features,
)
from data_utils.audio_io import audio_duration, iter_audio_chunks, load_audio, write_wav
from data_utils.preprocess_config import PreprocessConfig
from data_utils.process import make_extractor
from utils.cli import UserError

STEREO_TONE = "aevalsrc=0.5*sin(2*PI*440*t)|0.3*sin(2*PI*440*t):s=44100:d=1.5"


def _ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly with `args`, failing the test if it fails."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _peak_hz(wav: np.ndarray, sr: int) -> float:
    """Return the frequency (Hz) of the strongest spectral peak of `wav`."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * sr / len(wav))


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "ogg", "m4a"])
def test_load_audio_formats(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"tone.{ext}"
    _ffmpeg("-f", "lavfi", "-i", STEREO_TONE, "-ac", "2", str(path))
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 24000) < 0.06 * 16000
    assert abs(_peak_hz(wav, 16000) - 440) < 5
    assert 0.3 < np.abs(wav).max() <= 1.0
    assert abs(audio_duration(path) - 1.5) < 0.1


def test_load_audio_resamples(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    _ffmpeg("-f", "lavfi", "-i", STEREO_TONE, str(path))
    wav = load_audio(path, sr=8000)
    assert len(wav) == 12000
    assert abs(_peak_hz(wav, 8000) - 440) < 5


def test_load_audio_from_video(sample_video: Path) -> None:
    assert abs(len(load_audio(sample_video)) / 16000 - 3.0) < 0.1


def test_load_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n")
    with pytest.raises(UserError, match="no audio stream|cannot decode audio"):
        load_audio(text)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError, match="cannot decode audio"):
        load_audio(garbage)
    silent_video = tmp_path / "silent.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=1", "-pix_fmt", "yuv420p", str(silent_video)
    )
    with pytest.raises(UserError, match="no audio stream"):
        load_audio(silent_video)
    with pytest.raises(UserError, match="not found"):
        audio_duration(tmp_path / "missing.mp3")


def test_write_wav_roundtrip_and_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wav = np.clip(rng.normal(0, 0.3, 16000 * 3 + 123), -1.5, 1.5).astype(np.float32)
    path = tmp_path / "noise.wav"
    write_wav(path, wav, 16000)
    back = load_audio(path)
    np.testing.assert_allclose(back, np.clip(wav, -1, 1), atol=1.0 / 16000)
    assert audio_duration(path) == pytest.approx(len(wav) / 16000)
    chunks = list(iter_audio_chunks(path, 16000, chunk_seconds=1.0))
    assert [len(c) for c in chunks] == [16000, 16000, 16000, 123]
    np.testing.assert_array_equal(np.concatenate(chunks), back)


def test_logmel_shapes_and_alignment() -> None:
    sr, fps = 16000, 25
    rng = np.random.default_rng(0)
    wav = np.zeros(sr * 2, dtype=np.float32)
    wav[sr : sr + sr // 5] = rng.normal(0, 0.5, sr // 5)
    extractor = get_extractor("logmel")
    feats = extractor.extract(wav, sr, fps)
    assert feats.shape == (50, 32, 16) and feats.dtype == np.float32
    assert extractor.extract(wav, sr, fps, num_frames=47).shape == (47, 32, 16)
    assert extractor.extract(wav, sr, fps, num_frames=60).shape == (60, 32, 16)
    assert extractor.extract(wav, sr, 30).shape == (60, 32, 16)
    energy = feats[:, :, 7:9].mean(axis=(1, 2))
    loud = np.flatnonzero(energy > energy.min() + 0.5 * (energy.max() - energy.min()))
    assert loud.min() >= 24 and loud.max() <= 30, loud
    assert set(range(26, 29)) <= set(loud)


def test_logmel_normalisation_and_determinism(speech_wav: Path) -> None:
    wav = load_audio(speech_wav)
    extractor = get_extractor("logmel", n_mels=24, window=8)
    feats = extractor.extract(wav, 16000, 25)
    assert feats.shape == (50, 24, 8)
    steps = np.concatenate([feats[:, :, 3], feats[:, :, 4]])
    np.testing.assert_allclose(steps.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(steps.std(0), 1.0, atol=1e-3)
    np.testing.assert_array_equal(feats, extractor.extract(wav, 16000, 25))
    noise = np.random.default_rng(1).normal(0, 0.2, 32000).astype(np.float32)
    np.testing.assert_allclose(
        extractor.extract(noise, 16000, 25), extractor.extract(0.1 * noise, 16000, 25), atol=0.02
    )
    resampled = load_audio(speech_wav, sr=44100)
    assert extractor.extract(resampled, 44100, 25).shape == (50, 24, 8)


class HalfFrameMeans:
    """A frame-local test extractor: mean of each half frame, windows of 4 steps (exact under streaming)."""

    name = "halfmeans"

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Return windows [T, 1, 4] of half-frame means of `wav`."""
        t = num_video_frames(len(wav), sr, fps, num_frames)
        edges = np.round(np.arange(2 * t + 1) * sr / (2 * fps)).astype(int)
        steps = np.array(
            [wav[a:b].mean() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:], strict=False)]
        )
        return frame_windows(steps[:, None].astype(np.float32), 4)


def _random_chunks(wav: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """`wav` cut at random points into chunks."""
    cuts = np.sort(rng.integers(0, len(wav), 12))
    return np.split(wav, cuts)


def test_stream_features_match_one_shot_extraction() -> None:
    rng = np.random.default_rng(0)
    sr, fps = 16000, 25.0
    wav = rng.standard_normal(int(7.3 * sr)).astype(np.float32)
    frames = round(len(wav) / sr * fps)
    extractor = HalfFrameMeans()
    streamed = list(stream_features(extractor, _random_chunks(wav, rng), sr, fps, frames, 40, 5))
    assert [len(s) for s in streamed] == [40, 40, 40, 40, frames - 160]
    np.testing.assert_allclose(np.concatenate(streamed), extractor.extract(wav, sr, fps, frames), atol=1e-6)

    logmel = LogMelExtractor()
    short = stream_features(logmel, _random_chunks(wav, rng), sr, fps, frames, segment_frames=frames)
    np.testing.assert_allclose(next(short), logmel.extract(wav, sr, fps, frames), atol=1e-5)
    long = np.concatenate(list(stream_features(logmel, _random_chunks(wav, rng), sr, fps, frames, 60, 10)))
    assert long.shape == (frames, logmel.n_mels, logmel.window) and np.isfinite(long).all()


def test_registry() -> None:
    assert {"logmel", "hubert", "wav2vec2", "deepspeech"} <= set(available_extractors())
    extractor = get_extractor("logmel", n_mels="40")
    assert extractor.name == "logmel" and extractor.settings()["n_mels"] == 40
    assert get_extractor(extractor.name, **extractor.settings()).settings() == extractor.settings()
    with pytest.raises(UserError, match="unknown audio extractor 'nope'.*logmel"):
        get_extractor("nope")
    with pytest.raises(UserError, match="unknown setting.*colour"):
        get_extractor("logmel", colour=3)
    with pytest.raises(UserError, match="n_mels"):
        get_extractor("logmel", n_mels="many")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random HuBERT and wav2vec2 models saved in HuggingFace format: {name: folder}."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    size = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    convs = dict(conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    HubertModel(HubertConfig(**size, **convs)).save_pretrained(root / "hubert")
    Wav2Vec2Model(Wav2Vec2Config(**size, **convs)).save_pretrained(root / "wav2vec2")
    return {"hubert": root / "hubert", "wav2vec2": root / "wav2vec2"}


@pytest.mark.parametrize("name", ["hubert", "wav2vec2"])
def test_transformers_extractors(name: str, tiny_models: dict[str, Path], speech_wav: Path) -> None:
    wav = load_audio(speech_wav)
    extractor = get_extractor(name, model_dir=str(tiny_models[name]))
    feats = extractor.extract(wav, 16000, 25)
    assert feats.shape == (50, 16, 16) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    np.testing.assert_array_equal(feats, extractor.extract(wav, 16000, 25))
    assert extractor.extract(wav, 16000, 25, num_frames=57).shape == (57, 16, 16)
    chunked = get_extractor(name, model_dir=str(tiny_models[name]), chunk_seconds=0.5, layer=1, window=4)
    assert chunked.extract(wav, 16000, 30).shape == (60, 16, 4)
    assert chunked.settings()["layer"] == 1


def test_transformers_extractor_errors(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="model_dir"):
        get_extractor("hubert")
    with pytest.raises(UserError, match="model_dir"):
        get_extractor("wav2vec2", model_dir=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="'wav2vec2' model"):
        get_extractor("hubert", model_dir=str(tiny_models["wav2vec2"]))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_models["hubert"] / "config.json").read_text())
    with pytest.raises(UserError, match="cannot load"):
        get_extractor("hubert", model_dir=str(no_weights))


def test_transformers_extractor_by_hub_name(
    tiny_models: dict[str, Path], speech_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    fetched = []

    def snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        """The hub as seen from here: one known model, the others not in the cache and no network."""
        fetched.append((repo_id, allow_patterns))
        if repo_id != "someone/tiny-hubert":
            raise LocalEntryNotFoundError("offline and not in the cache")
        return str(tiny_models["hubert"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    extractor = get_extractor("hubert", model_dir="someone/tiny-hubert")
    assert extractor.extract(load_audio(speech_wav), 16000, 25).shape == (50, 16, 16)
    assert extractor.settings()["model_dir"] == "someone/tiny-hubert"  # predict fetches it the same way
    assert fetched[0][0] == "someone/tiny-hubert" and "config.json" in fetched[0][1]
    with pytest.raises(UserError, match="cannot fetch 'facebook/hubert-base-ls960'.*needs the internet"):
        get_extractor("hubert", model_dir="facebook/hubert-base-ls960")
    local = get_extractor("hubert", model_dir=str(tiny_models["hubert"]))  # a folder is never fetched
    assert local.settings()["model_dir"] == str(tiny_models["hubert"]) and len(fetched) == 2
    # preprocess.sh --audio_extractor hubert --extractor_model someone/tiny-hubert takes the same way.
    cfg = PreprocessConfig(Path("v.mp4"), Path("out"), audio_extractor="hubert")
    hub = make_extractor(dataclasses.replace(cfg, extractor_model=Path("someone/tiny-hubert")))
    assert hub.settings()["model_dir"] == "someone/tiny-hubert"
    with pytest.raises(UserError, match="not found"):  # a hub name only where a hub model is meant
        make_extractor(dataclasses.replace(cfg, audio_extractor="deepspeech", extractor_model=Path("a/b")))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DeepSpeech-like ONNX model: [1, time, 26] features -> [1, time, 29] logits."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(26, 32), torch.nn.Tanh(), torch.nn.Linear(32, 29))
    path = tmp_path_factory.mktemp("onnx") / "deepspeech.onnx"
    dynamic = {"features": {1: "time"}, "logits": {1: "time"}}
    torch.onnx.export(
        model,
        (torch.zeros(1, 20, 26),),
        str(path),
        input_names=["features"],
        output_names=["logits"],
        dynamic_axes=dynamic,
        dynamo=False,
    )
    return path


def test_deepspeech_extractor(tiny_onnx: Path, speech_wav: Path, tmp_path: Path) -> None:
    wav = load_audio(speech_wav)
    extractor = get_extractor("deepspeech", model_path=str(tiny_onnx))
    feats = extractor.extract(wav, 16000, 25)
    assert feats.shape == (50, 29, 16) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    np.testing.assert_array_equal(feats, extractor.extract(wav, 16000, 25))
    assert extractor.extract(wav, 16000, 25, num_frames=44).shape == (44, 29, 16)
    with pytest.raises(UserError, match="model_path"):
        get_extractor("deepspeech")
    with pytest.raises(UserError, match="model_path"):
        get_extractor("deepspeech", model_path=str(tmp_path / "missing.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load"):
        get_extractor("deepspeech", model_path=str(garbage))


def test_phonemes_extractor(speech_wav: Path) -> None:
    pytest.importorskip("pocketsphinx")
    from data_utils.audio_features import PHONES

    wav = load_audio(speech_wav)
    extractor = get_extractor("phonemes")
    feats = extractor.extract(wav, 16000, 25)
    assert feats.shape == (50, len(PHONES), 16) and len(PHONES) == 40
    np.testing.assert_array_equal(feats.sum(axis=1), 1.0)
    speech_steps = feats[:, 1:, 8].sum()
    assert speech_steps > 10, "phones other than silence must be recognised in speech"
    np.testing.assert_array_equal(feats, extractor.extract(wav, 16000, 25))
    silence = extractor.extract(np.zeros(16000, dtype=np.float32), 16000, 25, num_frames=30)
    assert silence.shape == (30, 40, 16) and silence[:, 0].min() == 1.0


def test_the_phone_decoder_is_reused_and_decodes_each_utterance_as_a_new_one(speech_wav: Path) -> None:
    """One pocketsphinx decoder per thread serves every utterance (building one costs about 0.2 s, more than
    decoding a live block), and other audio decoded in between does not change what it hears."""
    pytest.importorskip("pocketsphinx")
    import threading

    from data_utils import audio_features

    wav = load_audio(speech_wav)
    extractor = get_extractor("phonemes")
    first = extractor.phone_labels(wav)
    decoder = audio_features._PHONE_DECODERS.decoder
    rng = np.random.default_rng(3)
    for other in (wav[::-1] * 3.0, rng.normal(0, 0.3, 16000), wav[: len(wav) // 3] * 0.05):
        extractor.phone_labels(np.clip(other, -1, 1).astype(np.float32))
        np.testing.assert_array_equal(extractor.phone_labels(wav), first)
    assert audio_features._PHONE_DECODERS.decoder is decoder
    fresh: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: fresh.append(extractor.phone_labels(wav)))  # a new decoder
    worker.start()
    worker.join()
    np.testing.assert_array_equal(fresh[0], first)


def test_phone_search_does_not_collapse_into_one_phone_under_a_hum(tmp_path: Path) -> None:
    """16 s of spoken English over a 100 Hz hum (mains hum, as in real recordings): with beams narrowed to
    1e-10 pocketsphinx heard one phone for all of it; every phone but silence must stay short (real phones
    last well under a second)."""
    pytest.importorskip("pocketsphinx")
    from data_utils.audio_features import PHONES
    from data_utils.sample import _espeak, generate_speech

    if not _espeak("test", tmp_path / "probe.wav"):
        pytest.skip("needs espeak-ng's spoken English (the synthetic vowels do not trigger the collapse)")
    wav = load_audio(generate_speech(tmp_path / "speech.wav", seconds=16.0))
    wav = (wav + 0.05 * np.sin(2 * np.pi * 100 * np.arange(len(wav)) / 16000)).astype(np.float32)
    labels = get_extractor("phonemes").phone_labels(wav)
    starts = np.r_[0, np.flatnonzero(np.diff(labels)) + 1]
    lengths = np.diff(np.r_[starts, len(labels)]) / 100  # seconds
    speech = labels[starts] != PHONES.index("SIL")
    assert lengths[speech].max() < 1.0
    assert len(np.unique(labels)) > 10  # many phones heard, not a few


def test_visemes_group_every_phone_once() -> None:
    from data_utils.audio_features import PHONES, VISEME_GROUPS, VISEMES, viseme_of_phone

    grouped = [p for _, phones in VISEME_GROUPS for p in phones.split()]
    assert sorted(grouped) == sorted(PHONES), "each phone belongs to exactly one viseme"
    of = viseme_of_phone()
    assert [VISEMES[of[PHONES.index(p)]] for p in ("P", "B", "M", "AA", "SIL")] == [
        "lips_closed",
        "lips_closed",
        "lips_closed",
        "open",
        "rest",
    ]


def test_visemes_extractor_is_the_phones_grouped_and_the_loudness(speech_wav: Path) -> None:
    pytest.importorskip("pocketsphinx")
    from data_utils.audio_features import VISEMES, feature_norm, viseme_of_phone

    wav = load_audio(speech_wav)
    phones = get_extractor("phonemes").extract(wav, 16000, 25)
    visemes = get_extractor("visemes").extract(wav, 16000, 25)
    assert visemes.shape == (50, len(VISEMES) + 1, 16) and len(VISEMES) == 12
    one_hot, loudness = visemes[:, :12], visemes[:, 12]
    np.testing.assert_array_equal(one_hot, np.eye(len(VISEMES))[viseme_of_phone()].T @ phones)
    assert one_hot[:, 1:].sum() > 10, "visemes other than rest must be recognised in speech"
    steps = loudness[:, 8]  # one window step per frame
    assert abs(steps.mean()) < 0.3 and 0.7 < steps.std() < 1.3  # standardised over the audio
    quieter = get_extractor("visemes").extract(wav * 0.5, 16000, 25)  # 6 dB down: the same loudness
    np.testing.assert_allclose(quieter[:, 12], loudness, atol=0.15)  # (the log-mel floor shifts silences)
    speech_then_silence = np.concatenate([wav, np.zeros_like(wav)])
    both = get_extractor("visemes").extract(speech_then_silence, 16000, 25)[:, 12, 8]
    assert both[:50].mean() > both[50:].mean() + 1.0  # louder where there is speech
    assert feature_norm("visemes", visemes) == {"mean": [0.0] * 13, "std": [1.0] * 13}


def test_feature_norm_keeps_phones_unseen_in_training_bounded() -> None:
    """A short clip never hears every phone: standardising one-hot phones per channel would divide a phone
    absent from training by the std floor (1e5 x) when another voice says it."""
    from data_utils.audio_features import PHONES, feature_norm, normalise_windows

    rng = np.random.default_rng(0)
    heard = rng.integers(0, 10, 200)  # the training clip uses 10 of the 40 phones
    train = np.eye(len(PHONES), dtype=np.float32)[heard][:, :, None].repeat(16, axis=2)
    norm = feature_norm("phonemes", train)
    other_voice = np.eye(len(PHONES), dtype=np.float32)[[30, 35]][:, :, None].repeat(16, axis=2)
    assert np.abs(normalise_windows(other_voice, norm)).max() == 1.0
    mel = rng.normal(-3.0, 2.0, (200, 32, 16)).astype(np.float32)
    mel_norm = feature_norm("logmel", mel)
    standardised = normalise_windows(mel, mel_norm)
    assert abs(standardised.mean()) < 1e-3 and abs(standardised.std() - 1.0) < 1e-2
    flat = feature_norm("logmel", np.zeros((10, 32, 16), np.float32))
    assert min(flat["std"]) > 0, "a constant channel is divided by the floor, not by zero"


def test_phones_are_decoded_in_utterances_cut_at_quiet_moments(monkeypatch: pytest.MonkeyPatch) -> None:
    """pocketsphinx's all-phone search collapsed on a real 60 s clip decoded whole (one phone from 21.6 s on),
    so long audio is decoded in utterances of at most PHONE_CHUNK_SECONDS, each cut where it is quietest."""
    from data_utils import audio_features as af

    rng = np.random.default_rng(0)
    wav = rng.normal(0, 0.1, 16000 * 25).astype(np.float32)
    quiet = [9.5, 18.7]  # seconds: the only near-silent 10 ms
    for q in quiet:
        wav[round(q * 16000) : round(q * 16000) + 160] *= 1e-3
    cuts = af.phone_cuts(wav)
    assert cuts == [0, 950, 1870, 2500]
    assert all(
        b - a <= af.PHONE_CHUNK_SECONDS * af.PHONE_RATE for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    )
    seen: list[int] = []

    def fake_utterance(self: af.PhonemeExtractor, part: np.ndarray) -> np.ndarray:
        seen.append(len(part))
        return np.full(len(part) // 160 + 1, len(seen), dtype=np.int64)

    monkeypatch.setattr(af.PhonemeExtractor, "__post_init__", lambda self: None)
    monkeypatch.setattr(af.PhonemeExtractor, "_utterance_labels", fake_utterance)
    labels = af.PhonemeExtractor().phone_labels(wav)
    assert seen == [9.5 * 16000, 9.2 * 16000, 6.3 * 16000] and len(labels) == 2501
    assert (labels[:950] == 1).all() and (labels[950:1870] == 2).all() and (labels[1870:] == 3).all()
    assert af.phone_cuts(np.zeros(16000 * 3, np.float32)) == [0, 300]
