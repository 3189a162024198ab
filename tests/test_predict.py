"""predict.py end to end on a tiny untrained avatar: videos for new audio, --direct metrics, errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import predict
from data_utils.audio_io import write_wav
from data_utils.lips import LIP_MEASURES
from evaluation.lipsync import summary_lines
from scene import inference, predict_cli, prediction
from scene.avatar import Avatar
from scene.checkpoint import load_avatar, save_checkpoint
from scene.dataset import TalkingHeadDataset
from scene.deformation import DeformConfig, mouth_region
from scene.gaussians import init_from_track
from tests.dataset_factory import make_dataset
from utils.cli import run_cli
from utils.video_out import VideoWriter, ffmpeg_exe, probe_media

FPS = 4.0
ITERATION = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained avatar saved as a checkpoint next to its synthetic dataset -> (model_path, data_path)."""
    root = tmp_path_factory.mktemp("predict")
    data = make_dataset(root / "data", frames=24, size=32, fps=8)
    ds = TalkingHeadDataset(data, "train")
    track = torch.load(data / "track_params.pt")
    gaussians = init_from_track(track, 200, seed=0)
    cfg = DeformConfig(
        **mouth_region(np.asarray(track["shape"])),
        triplane_resolutions=(8,),
        triplane_channels=4,
        token_dim=8,
        heads=1,
        kan_hidden=(8,),
        kan_grids=3,
        audio_channels=8,
        audio_window=4,
    )
    bounds = gaussians.bounds()
    config = {
        "deform": cfg.to_dict(),
        "bounds": bounds.tolist(),
        "audio_extractor": {"name": "logmel", "settings": {"n_mels": 8, "window": 4}},
        "audio_norm": ds.audio_norm,
        "dataset": ds.meta(),
        "train": {},
    }
    save_checkpoint(root / "model", ITERATION, Avatar(gaussians, cfg, bounds), config, {})
    return root / "model", data


def convert_audio(src: Path, dst: Path, *args: str) -> Path:
    """Transcode `src` to `dst` with extra ffmpeg output arguments (format from the suffix)."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def run_predict(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run predict.py's CLI in-process -> (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(predict.main, argv)
    return int(exc.value.code or 0), capsys.readouterr().err


def base_args(trained: tuple[Path, Path], out: Path) -> list[str]:
    """Return the model/reference/output arguments."""
    return ["--model_path", str(trained[0]), "--reference_path", str(trained[1]), "--output_dir", str(out)]


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("cycle", ".wav"), ("static", ".mp3"), ("orbit", ".m4a")],
)
def test_predict_video_matches_audio(
    mode: str,
    fmt: str,
    trained: tuple[Path, Path],
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    audio = speech_wav
    if fmt != ".wav":
        audio = convert_audio(speech_wav, tmp_path / f"speech{fmt}", "-ac", "2", "-ar", "44100")
    out = tmp_path / "results"
    args = [*base_args(trained, out), "--audio_path", str(audio), "--camera_mode", mode, "--fps", str(FPS)]
    skip_lipsync = ["--no_lipsync"] if mode == "static" else []
    code, err = run_predict([*args, "--batch_size", "8", "--device", "cpu", *skip_lipsync], capsys)
    assert code == 0, err
    mov = out / f"output_custom_{ITERATION}iter_renders.mov"
    summary = json.loads((out / "summary.json").read_text())
    info = probe_media(mov)
    expected = round(summary["audio_seconds"] * FPS)
    assert summary["audio_seconds"] == pytest.approx(2.0, abs=0.05)
    assert info.frames == expected == summary["frames"] == 8
    assert info.fps == FPS and info.video_codec == "h264"
    assert info.has_audio and info.audio_codec == "aac"
    assert info.audio_seconds == pytest.approx(info.video_seconds, abs=0.05)
    mp4 = probe_media(out / f"output_custom_{ITERATION}iter_renders.mp4")
    assert (mp4.frames, mp4.has_audio) == (info.frames, True)
    assert summary["camera_mode"] == mode and summary["device"] == "cpu"
    assert summary["render_fps"] > 0 and summary["end_to_end_fps"] > 0
    assert summary["video"] == str(mov)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    if skip_lipsync:
        assert "lipsync" not in summary
    else:  # 8 frames of render: scored, and said to be too short to judge
        sync = summary["lipsync"]
        assert sync["frames"] == 8 and sync["video"] == str(mov) and sync["audio"] == str(audio)
        assert sync["judged"] is False and sync["reason"].startswith("too short to judge")
        assert sync["syncnet"]["lse_c"] is None


def test_direct_writes_metrics(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "direct"
    code, err = run_predict(["--direct", *base_args(trained, out), "--batch_size", "8"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 8 and metrics["split"] == "val"
    assert 5.0 < metrics["psnr"] < 60.0 and 0.0 < metrics["ssim"] <= 1.0
    assert np.isfinite(metrics["face_psnr"]) and 0.0 < metrics["face_ssim"] <= 1.0
    assert {"lmd_mouth", "lmd_mouth_shape", "lmd_mouth_offset", "lmd_face", "landmark_frames"} <= set(metrics)
    sync = json.loads((out / "summary.json").read_text())["lipsync"]
    assert sync["frames"] == 8 and sync["judged"] is False  # scored against the validation audio it carries
    info = probe_media(out / f"output_custom_{ITERATION}iter_renders.mov")
    assert info.frames == 8 and info.has_audio
    assert info.audio_seconds == pytest.approx(1.0, abs=0.05)


def bad_audio(tmp_path: Path, kind: str) -> Path:
    """Write an audio input that predict must refuse: silent, too short or not audio at all."""
    path = tmp_path / f"{kind}.wav"
    rng = np.random.default_rng(0)
    if kind == "silent":
        write_wav(path, np.zeros(16000, np.float32), 16000)
    elif kind == "short":
        write_wav(path, 0.3 * rng.standard_normal(800).astype(np.float32), 16000)
    else:
        path.write_text("not audio")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_model", "model"),
        ("no_dataset", "dataset"),
        ("silent", "is silent"),
        ("short", "shorter than one frame"),
        ("unreadable", "cannot decode audio"),
        ("no_audio_flag", "--audio_path"),
        ("bad_iteration", "iteration 99"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    case: str,
    message: str,
    trained: tuple[Path, Path],
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    model, data = trained
    out = tmp_path / "results"
    audio = bad_audio(tmp_path, case) if case in ("silent", "short", "unreadable") else speech_wav
    args = ["--model_path", str(model), "--reference_path", str(data), "--output_dir", str(out)]
    args += ["--audio_path", str(audio), "--fps", str(FPS)]
    if case == "no_model":
        args[1] = str(tmp_path / "missing_model")
    elif case == "no_dataset":
        args[3] = str(tmp_path / "missing_data")
    elif case == "no_audio_flag":
        args = args[:6]
    elif case == "bad_iteration":
        args += ["--iteration", "99"]
    code, err = run_predict(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_existing_output_needs_force(
    trained: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = [*base_args(trained, out), "--audio_path", str(speech_wav)]
    code, err = run_predict([*args, "--force"], capsys)
    assert code == 2 and "not a results folder this tool wrote" in err and err.count("\n") == 1
    (out / "summary.json").write_text("{}")  # the marker of a results folder: --force may replace it
    code, err = run_predict(args, capsys)
    assert code == 2 and "--force" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "summary.json"]


def test_video_writer_discards_partial_output_on_error(tmp_path: Path) -> None:
    path = tmp_path / "clip.mov"
    with pytest.raises(ValueError, match="expected uint8 frames"), VideoWriter(path, 25, 16, 16) as writer:
        writer.write(np.zeros((2, 16, 16, 3), np.uint8))
        writer.write(np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_video_writer_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "clip.mov"
    with VideoWriter(path, 10, 18, 12) as writer:
        for i in range(5):
            writer.write(np.full((12, 18, 3), 40 * i, np.uint8))
    info = probe_media(path)
    assert (info.frames, info.has_audio, info.fps) == (5, False, 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mov", "clip.mp4"]


def test_inference_renderer_matches_avatar_render(trained: tuple[Path, Path]) -> None:
    loaded = load_avatar(trained[0])
    with torch.no_grad():
        for param in loaded.avatar.deform.parameters():
            param.add_(0.05 * torch.randn_like(param))
    ds = TalkingHeadDataset(trained[1], "val", audio_norm=loaded.audio_norm)
    batch = ds.get(torch.arange(3))
    with torch.inference_mode():
        expected = loaded.avatar.render(batch).image
        renderer = inference.InferenceRenderer(loaded.avatar)
        assert loaded.avatar.deltas(batch).d_xyz.abs().max() > 1e-4
        torch.testing.assert_close(renderer(batch), expected, atol=1e-5, rtol=1e-5)
        padded = inference.pad_batch(ds.get(torch.arange(2)), 5)
    assert padded.viewmat.shape[0] == padded.audio.shape[0] == padded.image.shape[0] == 5
    torch.testing.assert_close(padded.audio[4], padded.audio[1])


def test_render_speed_bench_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench import render_speed

    out = tmp_path / "speed.json"
    args = [
        "--synthetic",
        "300",
        "--resolution",
        "24",
        "--batch_sizes",
        "1",
        "2",
        "--warmup",
        "0",
        "--runs",
        "1",
    ]
    assert render_speed.main([*args, "--variants", "fp32", "cache", "--breakdown", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_gaussians"] == 300 and report["device"] == "cpu" and not report["meets_targets"]
    assert [(r["variant"], r["batch_size"]) for r in report["results"]] == [
        ("fp32", 1),
        ("fp32", 2),
        ("cache", 1),
        ("cache", 2),
    ]
    assert all(r["fps"] > 0 and r["deform_ms_per_frame"] > 0 for r in report["results"])
    assert report["best"]["single"] > 0 and report["best"]["batch"] > 0
    assert "best: batch 1" in capsys.readouterr().out


def test_rebatch_regroups_segments_in_order() -> None:
    segments = [torch.arange(0, 5), torch.arange(5, 6), torch.arange(6, 13)]
    batches = list(prediction.rebatch(segments, 4))
    assert [len(b) for b in batches] == [4, 4, 4, 1]
    assert torch.equal(torch.cat(batches), torch.arange(13))


def test_direct_with_tracked_lips_drives_the_lip_code_by_the_tracked_measures(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    loaded = load_avatar(trained[0], None, torch.device("cpu"))
    ds = TalkingHeadDataset(trained[1], "val", audio_norm=loaded.audio_norm, lips=True)
    batch = next(iter(predict_cli.dataset_batches(ds, 4)))
    torch.manual_seed(0)
    with torch.no_grad():  # the output heads start at zero: random weights let every input show
        for param in loaded.avatar.deform.parameters():
            param.normal_(0.0, 0.3)
    tracked = inference.InferenceRenderer(loaded.avatar, tracked_lips=True).deltas(batch)
    predicted = inference.InferenceRenderer(loaded.avatar).deltas(batch)
    assert not torch.allclose(tracked.d_xyz, predicted.d_xyz)  # the measures reach the mouth
    direct = loaded.avatar.deltas(batch, tracked_lips=True)  # as the trainer renders with them
    assert torch.allclose(tracked.d_xyz, direct.d_xyz, atol=1e-5)
    out = tmp_path / "tracked"
    code, err = run_predict(["--direct", "--tracked_lips", *base_args(trained, out), "--no_lipsync"], capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["tracked_lips"] is True
    saved = np.load(out / prediction.LIP_CODE_FILE)  # the tracked measures of every frame drove the mouth
    np.testing.assert_allclose(saved, ds.lips.numpy(), atol=1e-6)
    opening = prediction.saved_lip_code_opening(out)
    np.testing.assert_allclose(opening, ds.lips[:, LIP_MEASURES.index("outer_opening")].numpy(), atol=1e-6)


def test_predict_saves_the_predicted_lip_code_and_scores_it(
    trained: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "results"
    args = [*base_args(trained, out), "--audio_path", str(speech_wav), "--fps", str(FPS), "--device", "cpu"]
    code, err = run_predict([*args, "--camera_mode", "static", "--raw_silence"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    saved = np.load(out / prediction.LIP_CODE_FILE)
    assert saved.shape == (summary["frames"], 3) and saved.dtype == np.float32
    loaded = load_avatar(trained[0], None, torch.device("cpu"))
    windows = torch.cat(list(predict_cli.audio_conditions(loaded, speech_wav, FPS, summary["frames"])))
    with torch.no_grad():  # with --raw_silence every frame is driven by its own audio window
        expected = loaded.avatar.deform.predict_lips(windows).numpy()
    np.testing.assert_allclose(saved, expected, atol=1e-5)
    sync = summary["lipsync"]["lip_code"]
    assert set(sync) == {"score", "judged", "auc", "lag_frames", "follows", "follows_lag"}
    assert sync["judged"] is False  # 8 frames: too short, as the render's own score
    assert any(line.startswith("  the lip code that drove it") for line in summary_lines(summary["lipsync"]))


def test_tracked_lips_refused_for_a_free_code_model(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    loaded = load_avatar(trained[0], None, torch.device("cpu"))
    cfg = dataclasses.replace(loaded.avatar.deform.cfg, audio_code="free")
    bounds = torch.tensor(loaded.config["bounds"])
    config = {**loaded.config, "deform": cfg.to_dict()}
    model = tmp_path / "free"
    save_checkpoint(model, ITERATION, Avatar(loaded.avatar.gaussians, cfg, bounds), config, {})
    argv = ["--direct", "--tracked_lips", "--model_path", str(model), "--reference_path", str(trained[1])]
    code, err = run_predict([*argv, "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "--audio_code free" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prog", ["predict.sh", "render_direct.sh"])
def test_every_flag_fills_one_predict_config_field(prog: str) -> None:
    parser = predict.build_parser(prog)
    args = parser.parse_args(["--model_path", "m", "--reference_path", "r", "--output_dir", "o"])
    assert set(vars(args)) == {f.name for f in dataclasses.fields(predict_cli.PredictConfig)}
    assert predict_cli.PredictConfig(**vars(args)).camera_mode == "cycle"


def test_predict_gives_the_rest_mouth_in_pauses(
    trained: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A pause in the speech drives the mouth by the rest window (summary counts those frames), as serve.sh
    does; --raw_silence keeps the pause's own audio."""
    from data_utils.audio_io import SAMPLE_RATE, load_audio

    speech = load_audio(speech_wav)
    wav = np.concatenate([speech, np.zeros(2 * SAMPLE_RATE, np.float32), speech])
    audio = tmp_path / "pause.wav"
    write_wav(audio, wav, SAMPLE_RATE)
    counts = {}
    for raw in (False, True):
        out = tmp_path / f"raw{raw}"
        argv = [*base_args(trained, out), "--audio_path", str(audio), "--fps", str(FPS), "--no_lipsync"]
        code, err = run_predict([*argv, "--device", "cpu", *(["--raw_silence"] if raw else [])], capsys)
        assert code == 0, err
        counts[raw] = json.loads((out / "summary.json").read_text())["silent_frames"]
    assert 4 <= counts[False] <= 8 and counts[True] == 0  # the 2 s pause is 8 frames, less its windows' reach
