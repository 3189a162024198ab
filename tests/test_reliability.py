"""Issue #19: awkward inputs to the five wrappers. Each bad input gets a one-line error and a non-zero exit,
the inputs keep their bytes and nothing is left behind (hidden entries included)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import predict
import train
from data_utils import process
from scene.avatar import Avatar
from scene.checkpoint import save_checkpoint
from scene.dataset import TalkingHeadDataset
from scene.deformation import DeformConfig, mouth_region
from scene.fingerprint import dataset_fingerprint
from scene.gaussians import init_from_track
from tests.dataset_factory import make_dataset
from utils.atomic import atomic_dir
from utils.cli import UserError, run_cli
from utils.output_policy import DATASET, claim_output
from utils.video_out import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
ITERATION = 5
SMALL_NET = [
    *("--triplane_resolutions", "8", "--triplane_channels", "4"),
    *("--token_dim", "8", "--kan_hidden", "8"),
]


def tree_state(path: Path) -> dict[str, str]:
    """Every entry at or under `path`, hidden ones included -> sha256 of its bytes ('dir' for a folder)."""
    path = Path(path)
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    state = {}
    for entry in sorted(path.rglob("*")):
        rel = str(entry.relative_to(path))
        state[rel] = "dir" if entry.is_dir() else hashlib.sha256(entry.read_bytes()).hexdigest()
    return state


def entries(folder: Path) -> list[str]:
    """Names in `folder`, hidden ones included."""
    return sorted(p.name for p in Path(folder).iterdir())


def run(main: Callable, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run an entry point through run_cli in-process -> (exit code, last stderr line)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    return int(exc.value.code or 0), err[-1] if err else ""


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)


def with_source(data: Path, video: str, crop: list[int]) -> Path:
    """Give the synthetic dataset at `data` a preprocess.json naming a source video and crop; return it."""
    meta = json.loads((data / "preprocess.json").read_text())
    meta.update(video=f"/videos/{video}", source={"bytes": 1000 + len(video)}, crop=crop)
    (data / "preprocess.json").write_text(json.dumps(meta))
    return data


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained avatar saved at iteration 5 with its dataset's fingerprint -> (model_path, data_path)."""
    root = tmp_path_factory.mktemp("rel")
    data = with_source(make_dataset(root / "bob", frames=24, size=32, fps=8), "bob.mp4", [10, 20, 300])
    ds = TalkingHeadDataset(data, "train")
    track = torch.load(data / "track_params.pt")
    gaussians = init_from_track(track, 200, seed=0)
    cfg = DeformConfig(
        triplane_resolutions=(8,), triplane_channels=4, token_dim=8, heads=1, kan_hidden=(8,), kan_grids=3,
        audio_channels=8, audio_window=4, **mouth_region(np.asarray(track["shape"])),
    )  # fmt: skip
    config = {
        "deform": cfg.to_dict(),
        "bounds": gaussians.bounds().tolist(),
        "audio_extractor": {"name": "logmel", "settings": {"n_mels": 8, "window": 4}},
        "audio_norm": ds.audio_norm,
        "dataset": {**ds.meta(), "fingerprint": dataset_fingerprint(data)},
        "train": {},
    }
    save_checkpoint(root / "model", ITERATION, Avatar(gaussians, cfg, gaussians.bounds()), config, {})
    return root / "model", data


def predict_args(model_path: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """predict.sh's flags for the tiny model on the CPU."""
    return [
        "--model_path", str(model_path), "--reference_path", str(data), "--output_dir", str(out),
        "--device", "cpu", "--batch_size", "8", *extra,
    ]  # fmt: skip


# 1. --output_dir equal to the model, to its parent or to the dataset: refused, nothing replaced.
@pytest.mark.parametrize("target", ["model", "model_parent", "reference", "inside_model"])
@pytest.mark.parametrize("direct", [False, True])
def test_1_output_dir_overlapping_an_input_is_refused_even_with_force(
    target: str, direct: bool, model: tuple[Path, Path], speech_wav: Path, capsys: pytest.CaptureFixture
) -> None:
    model_path, data = model
    out = {
        "model": model_path,
        "model_parent": model_path.parent,
        "reference": data,
        "inside_model": model_path / "results",
    }[target]
    before = tree_state(model_path.parent)
    audio = [] if direct else ["--audio_path", str(speech_wav)]
    flags = ["--direct"] if direct else []
    code, err = run(predict.main, [*flags, *predict_args(model_path, data, out, *audio, "--force")], capsys)
    assert code == 2
    assert err.startswith("error: --output_dir") and "choose an output folder outside every input" in err
    assert tree_state(model_path.parent) == before


def test_1_preprocess_out_dir_containing_its_audio_is_refused(
    sample_video: Path, speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    audio = tmp_path / "data" / "me.wav"
    audio.parent.mkdir()
    shutil.copy(speech_wav, audio)
    before = tree_state(tmp_path)
    code, err = run(process.main, [str(sample_video), str(tmp_path / "data"), "--audio", str(audio)], capsys)
    assert code == 2 and "contains the input" in err
    assert tree_state(tmp_path) == before


# 2. An existing output that is a file is never replaced; --force replaces only a folder of the tool.
def test_2_output_that_is_a_file_is_never_replaced(
    sample_video: Path, speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    me = tmp_path / "me.wav"
    shutil.copy(speech_wav, me)
    before = tree_state(tmp_path)
    for extra in ([], ["--force"]):
        code, err = run(process.main, [str(sample_video), str(me), *extra], capsys)
        assert code == 2
        assert err == f"error: '{me}' is a file, not a dataset folder; did you mean --audio {me}?"
    assert tree_state(tmp_path) == before and entries(tmp_path) == ["me.wav"]


def test_2_force_replaces_only_a_folder_with_the_marker(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "thesis.txt").write_text("mine")
    refused = pytest.raises(UserError, match="holds no preprocess.json, so it is not a dataset folder")
    with refused, atomic_dir(out, force=True, kind=DATASET):
        pass
    assert entries(out) == ["thesis.txt"]
    (out / "preprocess.json").write_text("{}")
    with atomic_dir(out, force=True, kind=DATASET) as tmp:
        (tmp / "preprocess.json").write_text('{"new": 1}')
    assert entries(out) == ["preprocess.json"] and entries(tmp_path) == ["data"]


# 3. Two runs into the same new folder: the second is refused while the first holds the name.
def test_3_concurrent_runs_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with atomic_dir(out) as tmp:
        (tmp / "first.txt").write_text("1")
        with pytest.raises(UserError, match="another run is writing"), atomic_dir(out):
            pass
        script = f"from utils.output_policy import claim_output\nwith claim_output({str(out)!r}): pass"
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
        assert "another run is writing" in proc.stderr
    assert entries(out) == ["first.txt"] and entries(tmp_path) == ["new"]
    with pytest.raises(UserError, match="already exists; pass --force"), atomic_dir(out):
        pass


def test_3_runs_into_one_new_parent_at_once(tmp_path: Path) -> None:
    """Runs that start together under a parent folder none of them finds (bench.ab's ten trainings into
    a new models/) all get their claim: none fails on the folder another made, or loses it to another's
    clean-up."""
    threads, failures = 8, []
    for round_ in range(10):
        parent = tmp_path / f"models{round_}"
        barrier = threading.Barrier(threads)

        def claim(i: int, parent: Path = parent, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with claim_output(parent / f"run{i}"):
                    (parent / f"run{i}").mkdir()
            except UserError as err:
                failures.append(str(err))

        workers = [threading.Thread(target=claim, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert entries(parent) == sorted(f"run{i}" for i in range(threads))
    assert failures == []


def test_3_train_refuses_a_model_folder_being_written(
    model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    with claim_output(out):
        code, err = run(train.main, ["-s", str(model[1]), "-m", str(out), "--iterations", "2"], capsys)
    assert code == 2 and "another run is writing" in err
    assert entries(tmp_path) == []


# 4. A reference dataset of another person.
def test_4_reference_of_another_dataset_needs_force(
    model: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model_path, data = model
    other = tmp_path / "alice"
    shutil.copytree(data, other)
    with_source(other, "alice.mp4", [0, 0, 256])
    out = tmp_path / "res"
    args = predict_args(model_path, other, out, "--audio_path", str(speech_wav), "--fps", "4")
    code, err = run(predict.main, args, capsys)
    assert code == 2 and "is not the dataset the model was trained on" in err
    assert "video 'bob.mp4' vs 'alice.mp4'" in err and "--force" in err
    assert entries(tmp_path) == ["alice"]
    with pytest.raises(SystemExit) as exc:
        run_cli(predict.main, [*args, "--force"])
    assert exc.value.code == 0 and "warning: --reference_path" in capsys.readouterr().err


# 5. A truncated MP4.
def test_5_truncated_video_is_refused(
    sample_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole = tmp_path / "whole.mp4"
    ffmpeg(
        "-i",
        str(sample_video),
        "-c:v",
        "mpeg4",
        "-q:v",
        "3",
        "-c:a",
        "aac",
        "-movflags",
        "+faststart",
        str(whole),
    )
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 10])
    whole.unlink()
    before = tree_state(tmp_path)
    code, err = run(process.main, [str(cut), str(tmp_path / "out"), "--size", "64"], capsys)
    assert code == 2
    assert err.startswith("error: decoded ") and "frames of 'cut.mp4'; the file looks truncated" in err
    assert tree_state(tmp_path) == before


# 6. One line instead of a traceback.
@pytest.mark.parametrize("script", ["preprocess", "train", "predict"])
def test_6_output_parent_that_is_a_file(
    script: str,
    model: tuple[Path, Path],
    sample_video: Path,
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "out"
    main, argv = {
        "preprocess": (process.main, [str(sample_video), str(out)]),
        "train": (train.main, ["-s", str(model[1]), "-m", str(out)]),
        "predict": (predict.main, predict_args(*model, out, "--audio_path", str(speech_wav))),
    }[script]
    code, err = run(main, argv, capsys)
    assert code == 2 and err == f"error: '{blocker}' is a file, so '{out}' cannot be created in it; " + (
        {"preprocess": "choose another OUT_DIR", "train": "choose another --model_path"}.get(
            script, "choose another --output_dir"
        )
    )
    assert entries(tmp_path) == ["file"]


def test_6_unwritable_output_parent(
    model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
            pytest.skip("root without chattr +i: a read-only folder cannot be made")
    else:
        locked.chmod(0o555)
    try:
        code, err = run(train.main, ["-s", str(model[1]), "-m", str(locked / "run")], capsys)
        assert code == 2 and err.startswith("error: cannot ") and "choose a writable folder" in err
        assert entries(locked) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "text"])
def test_6_corrupt_checkpoint(
    damage: str, model: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(model[0], broken)
    ckpt = broken / f"chkpnt{ITERATION}.pth"
    data = ckpt.read_bytes()
    ckpt.write_bytes(
        {"garbage": os.urandom(4096), "truncated": data[: len(data) // 2], "text": "é\n".encode("latin-1")}[
            damage
        ]
    )
    before = tree_state(tmp_path)
    out = tmp_path / "res"
    code, err = run(
        predict.main, predict_args(broken, model[1], out, "--audio_path", str(speech_wav)), capsys
    )
    assert code == 2 and err.startswith(f"error: cannot read checkpoint '{ckpt}'")
    assert tree_state(tmp_path) == before


def test_6_corrupt_track_params(
    model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(model[1], data)
    (data / "track_params.pt").write_bytes(b"\x80\x04not a pickle at all")
    before = tree_state(data)
    argv = ["-s", str(data), "-m", str(tmp_path / "run"), "--init_points", "50", *SMALL_NET]
    code, err = run(train.main, argv, capsys)
    assert code == 2 and err.startswith("error: cannot read ") and "rerun ./preprocess.sh" in err
    assert tree_state(data) == before and entries(tmp_path) == ["data"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
        (["--resolution", "-64"], "--resolution must be at least 16 pixels, got -64"),
        (["--resolution", "0"], "--resolution must be at least 16 pixels, got 0"),
        (["--iterations", "0"], "--iterations must be at least 1, got 0"),
        (["--iterations", "-5"], "--iterations must be at least 1, got -5"),
        (["--iter", "60"], "unrecognized arguments: --iter 60"),
    ],
)
def test_6_7_nonsense_numbers_and_abbreviations(
    flags: list[str], message: str, model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = run(train.main, ["-s", str(model[1]), "-m", str(tmp_path / "run"), *flags], capsys)
    assert code == 2 and err.startswith("error: ") and message in err
    assert entries(tmp_path) == []


def test_6_ctrl_c_during_imports_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(REPO / "train.sh"), "-s", str(tmp_path), "-m", str(tmp_path / "run")],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # past interpreter start-up, well before torch has finished importing
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted")
    assert entries(tmp_path) == []


# 7. render_direct.sh has its own flags.
def test_7_render_direct_rejects_predict_only_flags(
    model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = run(
        predict.main, ["--direct", *predict_args(*model, tmp_path / "r", "--camera_mode", "orbit")], capsys
    )
    assert code == 2 and "unrecognized arguments: --camera_mode orbit" in err
    direct_help = predict.build_parser("render_direct.sh").format_help()
    assert (
        "--audio_path" not in direct_help and "--camera_mode" not in direct_help and "--split" in direct_help
    )
    assert "--direct" not in direct_help and "--split" not in predict.build_parser().format_help()
    assert entries(tmp_path) == []


def test_7_untrained_checkpoint_is_refused(
    model: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    zero = tmp_path / "model"
    shutil.copytree(model[0], zero)
    ckpt = torch.load(zero / f"chkpnt{ITERATION}.pth", weights_only=False)
    ckpt["iteration"] = 0
    torch.save(ckpt, zero / "chkpnt0.pth")
    (zero / f"chkpnt{ITERATION}.pth").unlink()
    args = predict_args(zero, model[1], tmp_path / "res", "--audio_path", str(speech_wav))
    code, err = run(predict.main, args, capsys)
    assert code == 2 and "iteration 0 is untrained" in err
    assert entries(tmp_path) == ["model"]


# 8. No leftovers after SIGTERM or SIGHUP, and stale temporaries are swept.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_8_signal_during_preprocess_leaves_nothing(
    sig: signal.Signals, sample_video: Path, tmp_path: Path
) -> None:
    video = tmp_path / "in.mp4"
    shutil.copy(sample_video, video)
    before = tree_state(video)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(REPO / "preprocess.sh"), str(video), str(out), "--size", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        tmps = list(tmp_path.glob(".out.tmp-*/gt_imgs/*.jpg"))
        if tmps:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "preprocess ended before it wrote frames"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {sig.name}" in err and "Traceback" not in err
    assert entries(tmp_path) == ["in.mp4"] and tree_state(video) == before


def test_8_stale_temporaries_are_swept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in (".out.tmp-dead1", ".out.old-99999"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "frame.jpg").write_bytes(b"x" * 100)
    (tmp_path / ".other.tmp-1").mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert entries(tmp_path) == [".other.tmp-1", "out"]


def test_8_failed_training_leaves_no_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(
        train.main, ["-s", str(tmp_path / "nodata"), "-m", str(tmp_path / "models" / "me")], capsys
    )
    assert code == 2 and "run ./preprocess.sh" in err
    assert entries(tmp_path) == []


# 9. A rotated face.
def test_9_rotated_video_gets_rotation_advice(
    sample_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    turned = tmp_path / "turned.mp4"
    ffmpeg(
        "-i",
        str(sample_video),
        "-vf",
        "transpose=1",
        "-c:v",
        "mpeg4",
        "-q:v",
        "3",
        "-c:a",
        "copy",
        str(turned),
    )
    before = tree_state(tmp_path)
    code, err = run(process.main, [str(turned), str(tmp_path / "out"), "--size", "64"], capsys)
    assert code == 2 and "the face in 'turned.mp4' is rotated by about 9" in err
    assert "rotate the video 90 degrees counter-clockwise (ffmpeg -i IN -vf transpose=2 OUT)" in err
    assert tree_state(tmp_path) == before


def test_9_upside_down_face_that_is_not_found_gets_rotation_advice(sample_video: Path) -> None:
    frame = next(iter(process.read_frames(sample_video, 25.0)))
    process.check_upright("x.mp4", np.zeros_like(frame))  # nothing at any angle: no advice
    with pytest.raises(UserError, match=r"rotated by about 180 degrees; rotate the video by 180 degrees"):
        process.check_upright("x.mp4", np.ascontiguousarray(frame[::-1, ::-1]))


# 10. Smaller ones.
@pytest.mark.parametrize("where", ["same", "inside"])
def test_10_model_path_in_the_dataset_is_refused(
    where: str, model: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    data = model[1]
    out = data if where == "same" else data / "model"
    before = tree_state(data)
    code, err = run(train.main, ["-s", str(data), "-m", str(out), "--force"], capsys)
    relation = "is" if where == "same" else "lies inside"
    assert code == 2 and err.startswith(f"error: --model_path '{out}' {relation} the input '{data}'")
    assert tree_state(data) == before


def test_10_checkpoint_file_as_model_path(
    model: tuple[Path, Path], speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = model[0] / f"chkpnt{ITERATION}.pth"
    code, err = run(
        predict.main, predict_args(ckpt, model[1], tmp_path / "r", "--audio_path", str(speech_wav)), capsys
    )
    assert code == 2
    assert err == (
        f"error: '{ckpt}' is a checkpoint file; pass its folder and iteration: "
        f"--model_path {model[0]} --iteration {ITERATION}"
    )


def test_10_help_texts_and_flag_spellings() -> None:
    parser_help = subprocess.run(
        [str(REPO / "preprocess.sh"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "2-30" not in parser_help and "at least 2 s" in parser_help and "--no_preview" in parser_help
    assert not process.parse_args(["v.mp4", "o", "--no_preview"]).preview
    with pytest.raises(UserError, match="--no-preview"):  # the hyphenated spelling was retired (issue #18)
        process.parse_args(["v.mp4", "o", "--no-preview"])
    source = (REPO / "gaussian_renderer" / "gsplat_backend.py").read_text()
    assert "--backend torch" in source and "backend='torch'" not in source
