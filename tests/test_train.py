"""Training end to end on a tiny synthetic subject (CPU): outputs, quality gain, resume, reload,
densification, losses and PLY export."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import train
from gaussian_renderer import RenderOutput
from scene import train_cli, train_config, train_summary, trainer
from scene.checkpoint import avatar_from_checkpoint, latest_checkpoint, load_avatar, load_checkpoint
from scene.dataset import TalkingHeadDataset
from scene.deformation import DeformationNetwork, DeformConfig
from scene.densify import DensifyStrategy
from scene.gaussians import PARAM_NAMES, GaussianParams
from scene.inference import InferenceRenderer
from tests.dataset_factory import make_dataset
from utils.cli import UserError
from utils.config_cli import flat as flat_settings
from utils.config_cli import leaves
from utils.losses import dssim, l1, psnr, ssim, weighted_l1
from utils.ply import load_ply, save_ply

DEFORM_FIELDS = [f.name for f in dataclasses.fields(DeformConfig)]
SMALL_NET = [
    *("--triplane_resolutions", "16", "32", "--triplane_channels", "8"),
    *("--token_dim", "16", "--kan_hidden", "8", "--heads", "2"),
]


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    """Command line of a tiny CPU run."""
    return [
        "-s",
        str(data),
        "-m",
        str(out),
        "--init_points",
        "600",
        *SMALL_NET,
        "--log_every",
        "4",
        *extra,
    ]


def _records(model_path: Path) -> list[dict]:
    """metrics.jsonl lines."""
    return [json.loads(line) for line in (model_path / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject (24 frames at 32x32; 20 train, 4 val)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "subject", frames=24, size=32, fps=4)


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for 100 iterations (60 coarse)."""
    out = tmp_path_factory.mktemp("models") / "run"
    argv = _args(data_root, out, "--iterations", "100", "--coarse_iterations", "60", "--eval_every", "100")
    assert train.main([*argv, "--save_every", "50", "--refine_start", "20", "--refine_every", "20"]) == 0
    return out


def test_training_improves_and_writes_outputs(trained: Path) -> None:
    records = _records(trained)
    val = [r for r in records if "val_psnr" in r]
    assert val[0]["iteration"] == 0 and val[-1]["iteration"] == 100
    assert val[-1]["val_psnr"] >= val[0]["val_psnr"] + 3.0
    assert {"loss", "psnr", "num_gaussians", "it_per_s", "stage"} <= set(records[1])
    assert {r["stage"] for r in records[1:]} == {"coarse", "fine"}
    assert {"val_ssim", "val_psnr_face", "val_ssim_face"} <= set(val[-1])
    for name in ("cfg_args", "chkpnt50.pth", "chkpnt100.pth", "previews/iter_100.jpg", "train_summary.json"):
        assert (trained / name).is_file(), name
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["iterations"] == 100 and summary["model_size_mb"] > 0
    assert json.loads((trained / "cfg_args").read_text())["train"]["schedule"]["iterations"] == 100


def test_novel_pose_note_only_when_validation_poses_are_novel(data_root: Path, tmp_path: Path) -> None:
    assert train_summary.novel_pose_note(data_root) is None
    copy = tmp_path / "subject"
    copy.mkdir()
    record = json.loads((data_root / "preprocess.json").read_text())
    record["quality"] |= {"val_frames_novel_pose": 3, "val_pose_gap_max_deg": 6.25}
    (copy / "preprocess.json").write_text(json.dumps(record))
    note = train_summary.novel_pose_note(copy)
    assert note is not None and note.startswith("note: 3 validation frames") and "6.2 deg" in note


def test_ply_matches_checkpoint(trained: Path) -> None:
    ply = load_ply(trained / "point_cloud" / "iteration_100" / "point_cloud.ply")
    state = load_checkpoint(trained / "chkpnt100.pth")["model"]
    for name in ("means", "log_scales", "quats", "opacity_logits"):
        assert torch.allclose(ply[name], state[f"gaussians.params.{name}"], atol=1e-6)
    assert torch.allclose(ply["colors_rgb"], torch.sigmoid(state["gaussians.params.color_logits"]), atol=1e-5)


def test_load_avatar_needs_no_flags_and_renders_the_same(trained: Path, data_root: Path) -> None:
    loaded = load_avatar(trained)
    assert loaded.iteration == 100 and loaded.audio_extractor["name"] == "logmel"
    assert loaded.avatar.gaussians.num_gaussians == loaded.config["num_gaussians"]
    val = TalkingHeadDataset(data_root, "val", audio_norm=loaded.audio_norm)
    cfg = train_config.TrainConfig.from_saved(loaded.config["train"])
    metrics, _, _ = trainer.evaluate(loaded.avatar, val, "fine", cfg)
    assert metrics["val_psnr"] == pytest.approx(_records(trained)[-1]["val_psnr"], abs=1e-3)


@pytest.mark.parametrize("scope", ["mouth", "mouth_only", "lower_face"])
def test_lip_code_trains_audio_to_predict_the_tracked_lips(
    data_root: Path, tmp_path: Path, scope: str
) -> None:
    train_set = TalkingHeadDataset(data_root, "train", lips=True)
    assert TalkingHeadDataset(data_root, "train").lips is None  # loaded only when asked
    assert train_set.lips[:, 0].std() > 0.5  # standardised, and the factory's jaw moves
    argv = _args(data_root, tmp_path / "lips", "--iterations", "80", "--coarse_iterations", "10")
    argv += ["--audio_scope", scope, "--audio_code", "lips"]
    assert train.main([*argv, "--eval_every", "40", "--batch_size", "4", "--lr_final_ratio", "1"]) == 0
    val = [r for r in _records(tmp_path / "lips") if "val_lip_corr" in r]
    assert [r["iteration"] for r in val] == [40, 80]  # measured in the fine stage only
    loaded = load_avatar(tmp_path / "lips")
    cfg = loaded.avatar.deform_cfg
    assert (cfg.audio_scope, cfg.audio_code) == (scope, "lips") and cfg.mouth_radius > 0
    untrained = DeformationNetwork(cfg, loaded.avatar.bounds)
    with torch.no_grad():
        errors = [(net.predict_lips(train_set.audio) - train_set.lips).square().mean() for net in
                  (untrained, loaded.avatar.deform)]  # fmt: skip
    assert errors[1] < 0.75 * errors[0]
    # Inference (cached spatial features with the mouth bias) renders what training's validation renders.
    batch = TalkingHeadDataset(data_root, "val", audio_norm=loaded.audio_norm).get(torch.arange(2))
    with torch.no_grad():
        torch.testing.assert_close(InferenceRenderer(loaded.avatar)(batch), loaded.avatar.render(batch).image)


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_lip_code_noise_jitters_the_lips_the_renderer_sees_not_the_lip_targets(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noise: float
) -> None:
    from scene.avatar import Avatar

    shown, targets = [], []
    render_with_deltas, lip_loss = Avatar.render_with_deltas, trainer.lip_loss

    def spy_render(self, batch, stage, *args, **kwargs):  # noqa: ANN001, ANN202
        if stage == "fine":
            shown.append(batch.lips.clone())
        return render_with_deltas(self, batch, stage, *args, **kwargs)

    def spy_loss(deform, audio, lips, *args):  # noqa: ANN001, ANN202
        targets.append(lips.clone())
        return lip_loss(deform, audio, lips, *args)

    monkeypatch.setattr(Avatar, "render_with_deltas", spy_render)
    monkeypatch.setattr(trainer, "lip_loss", spy_loss)
    argv = _args(data_root, tmp_path / "m", "--iterations", "30", "--coarse_iterations", "10")
    argv += ["--audio_code", "lips", "--lip_corpus", "none", "--batch_size", "4"]
    assert train.main([*argv, "--lip_code_noise", str(noise), "--eval_every", "30"]) == 0
    assert len(targets) == 20 and len(shown) == 21  # every fine step, then the validation at 30
    difference = torch.cat(shown[:20]) - torch.cat(targets)  # rendered with one, learnt from the other
    if noise == 0:
        assert torch.equal(difference, torch.zeros_like(difference))
    else:
        assert 0.4 < difference.std() < 0.6 and difference.mean().abs() < 0.15
    saved = load_checkpoint(tmp_path / "m" / "chkpnt30.pth", torch.device("cpu"))
    assert saved["config"]["train"]["optim"]["lip_code_noise"] == noise


def test_audio_augment_needs_log_mel_features(data_root: Path, tmp_path: Path) -> None:
    phones = tmp_path / "phones"
    shutil.copytree(data_root, phones)
    report = json.loads((phones / "preprocess.json").read_text())
    report["audio_extractor"] = {"name": "phonemes", "settings": {}}
    (phones / "preprocess.json").write_text(json.dumps(report))
    with pytest.raises(UserError, match="--audio_augment perturbs log-mel"):
        train.main([*_args(phones, tmp_path / "out", "--iterations", "2"), "--audio_augment", "0.1"])


def test_saved_config_loads_whole_and_older_flat_ones_are_mapped() -> None:
    cfg = train_config.TrainConfig().with_values({"iterations": 7, "batch_size": 2, "kan_hidden": [16, 8]})
    saved = json.loads(json.dumps(dataclasses.asdict(cfg)))  # as in cfg_args: tuples become lists
    assert train_config.TrainConfig.from_saved(saved) == cfg
    # the flat config of earlier versions: `deform` held the changed fields only; compile is gone
    flat = {k: v for k, v in flat_settings(train_config.TrainConfig()).items() if k not in DEFORM_FIELDS}
    old = {**flat, "iterations": 7, "batch_size": 2, "compile": True, "deform": {"kan_hidden": [16, 8]}}
    # ... and it predates audio_scope and audio_code: it keeps the values it ran with
    before = cfg.with_values({"audio_scope": "everywhere", "audio_code": "free"})
    assert train_config.TrainConfig.from_saved(old) == before
    assert before != cfg


def test_unknown_saved_settings_are_named_in_one_error() -> None:
    saved = dataclasses.asdict(train_config.TrainConfig())
    saved["optim"]["lr_warp"] = 1.0
    with pytest.raises(UserError, match=r"unknown settings optim\.lr_warp;"):
        train_config.TrainConfig.from_saved(saved)
    with pytest.raises(UserError, match="unknown settings deform.token_width, warp;"):
        train_config.TrainConfig.from_saved({"iterations": 3, "warp": 1, "deform": {"token_width": 8}})


def test_checkpoint_with_unknown_deformation_settings_is_one_clear_error(trained: Path) -> None:
    checkpoint = load_checkpoint(latest_checkpoint(trained))
    checkpoint["config"]["deform"]["token_width"] = 12
    with pytest.raises(UserError, match=r"deformation network has unknown settings token_width;"):
        avatar_from_checkpoint(checkpoint)


def test_every_config_setting_has_exactly_one_flag_and_every_flag_a_setting() -> None:
    parser = train_cli.build_parser()
    dests = [a.dest for a in parser._actions if a.option_strings and a.dest != "help"]
    settings = [leaf.name for leaf in leaves(train_config.TrainConfig, flags_only=True)]
    assert len(settings) == len(set(settings))  # one namespace of flag names
    assert sorted(set(dests) - {"resume", "force", "deform"}) == sorted(settings)
    assert all(dests.count(name) == 1 for name in settings if name not in ("tf32", "use_camera"))
    internal = set(DEFORM_FIELDS) - set(settings)
    assert internal == set(train_config.DEFORM_FROM_DATA)  # a new DeformConfig field needs a flag or a reason
    cfg, given, _, _ = train_cli.parse_config(["-s", "d", "-m", "m", "--kan_hidden", "64", "--no_use_camera"])
    assert (
        cfg.deform.kan_hidden == (64,)
        and not cfg.deform.use_camera
        and cfg == train_config.TrainConfig(source_path="d", model_path="m").with_values(given)
    )


def test_the_deform_json_flag_names_its_replacement() -> None:
    with pytest.raises(UserError, match="use --kan_hidden 64 --no_use_camera;"):
        deform = '{"kan_hidden": [64], "use_camera": false}'
        train_cli.parse_config(["-s", "d", "-m", "m", "--deform", deform])


def test_tf32_is_on_by_default_and_can_be_turned_off() -> None:
    base = ["-s", "data", "-m", "out"]
    cfg, given, _, _ = train_cli.parse_config(base)
    assert cfg.schedule.tf32 and "tf32" not in given  # not given: --resume keeps the saved value silently
    cfg, given, _, _ = train_cli.parse_config([*base, "--no_tf32"])
    assert not cfg.schedule.tf32 and given["tf32"] is False


def test_refuses_existing_model_without_force_or_resume(trained: Path, data_root: Path) -> None:
    with pytest.raises(UserError, match="--resume"):
        train.main(_args(data_root, trained, "--iterations", "5"))


def test_resume_equals_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    common = [
        "--iterations",
        "12",
        "--coarse_iterations",
        "6",
        "--eval_every",
        "100",
        "--grow_grad2d",
        "1e-7",
    ]
    common += ["--refine_start", "2", "--refine_every", "4"]
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert train.main(_args(data_root, straight, *common)) == 0
    assert train.main(_args(data_root, pieces, *common, "--stop_at", "6")) == 0
    assert latest_checkpoint(pieces).name == "chkpnt6.pth"
    assert train.main(["-s", str(data_root), "-m", str(pieces), "--resume"]) == 0
    a, b = load_checkpoint(straight / "chkpnt12.pth"), load_checkpoint(pieces / "chkpnt12.pth")
    assert a["config"]["num_gaussians"] == b["config"]["num_gaussians"] > 600
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-5), key


def test_ctrl_c_saves_and_exits_130(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step = trainer.Trainer.train_step

    def interrupt_at_3(self: trainer.Trainer, i: int) -> tuple:
        if i == 3:
            raise KeyboardInterrupt
        return step(self, i)

    monkeypatch.setattr(trainer.Trainer, "train_step", interrupt_at_3)
    out = tmp_path / "run"
    assert train.main(_args(data_root, out, "--iterations", "10", "--eval_every", "100")) == 130
    assert latest_checkpoint(out).name == "chkpnt2.pth"


def _fake_render(n: int, grad: torch.Tensor) -> RenderOutput:
    """A RenderOutput of one 32x32 view with means2d.grad = grad [1,n,2] and every Gaussian visible."""
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = grad
    return RenderOutput(torch.zeros(1, 32, 32, 3), torch.zeros(1, 32, 32, 1), means2d, torch.ones(1, n))


def test_densification_grows_prunes_and_keeps_adam_state_consistent() -> None:
    torch.manual_seed(0)
    g = GaussianParams(0)
    g.set_from_points(torch.rand(100, 3), torch.full((100, 3), 0.5), init_opacity=0.5)
    with torch.no_grad():
        g.params["log_scales"][:50] = math.log(0.001)  # small -> cloned
        g.params["log_scales"][50:] = math.log(0.05)  # large -> split
        g.params["opacity_logits"][90:] = -10.0  # transparent -> pruned
    optimizers = {k: torch.optim.Adam([g.params[k]], lr=1e-3) for k in PARAM_NAMES}
    sum(p.sum() for p in g.params.values()).backward()
    for o in optimizers.values():
        o.step()
    densify = train_config.DensifyConfig(refine_start=0, refine_every=1, reset_every=1000)
    strategy = DensifyStrategy(densify, scene_scale=1.0, refine_stop=15_000)
    state = strategy.initialize_state(100, "cpu")
    grad = torch.zeros(1, 100, 2)
    grad[0, 40:60] = 1.0  # 10 small + 10 large Gaussians with high gradients
    strategy.step_post_backward(g.params, optimizers, state, 1, _fake_render(100, grad))
    assert g.num_gaussians == 100 + 10 + 10 - 10  # clone 10, split 10 into 20, prune 10
    for name in PARAM_NAMES:
        param = g.params[name]
        assert optimizers[name].param_groups[0]["params"][0] is param
        moments = optimizers[name].state[param]
        assert moments["exp_avg"].shape == moments["exp_avg_sq"].shape == param.shape
    assert state["grad2d"].shape == (g.num_gaussians,)

    densify = train_config.DensifyConfig(refine_start=0, refine_every=1, max_gaussians=115)
    capped = DensifyStrategy(densify, scene_scale=1.0, refine_stop=15_000)
    state = capped.initialize_state(g.num_gaussians, "cpu")
    grad = torch.ones(1, g.num_gaussians, 2)
    capped.step_post_backward(g.params, optimizers, state, 1, _fake_render(g.num_gaussians, grad))
    assert g.num_gaussians == 115  # 110 + the 5 highest-gradient candidates


def test_losses() -> None:
    torch.manual_seed(0)
    a, b = torch.rand(2, 24, 24, 3), torch.rand(2, 24, 24, 3)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5) and float(ssim(a, b)) < 0.2
    assert float(dssim(a, a)) == pytest.approx(0.0, abs=1e-5)
    assert math.isinf(float(psnr(a, a)))
    assert float(psnr(a, torch.clamp(a + 0.1, max=2))) == pytest.approx(20.0, abs=1e-3)
    assert float(l1(a, b)) == pytest.approx(float((a - b).abs().mean()))
    mask = torch.zeros(2, 24, 24, 1)
    assert float(weighted_l1(a, b, mask)) == 0.0


def test_ply_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    n = 50
    values = {
        "means": torch.randn(n, 3),
        "log_scales": torch.randn(n, 3),
        "quats": torch.randn(n, 4),
        "opacity_logits": torch.randn(n),
        "colors_rgb": torch.rand(n, 3),
    }
    save_ply(tmp_path / "pc.ply", *values.values())
    header = (tmp_path / "pc.ply").read_bytes()[:400].decode("ascii", "ignore")
    assert "format binary_little_endian 1.0" in header and "property float f_dc_0" in header
    loaded = load_ply(tmp_path / "pc.ply")
    for name, value in values.items():
        assert torch.allclose(loaded[name], value, atol=1e-5), name
