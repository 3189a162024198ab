"""The trainer: optimisers, loss, validation, previews, checkpoints and the training loop of train.sh."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.profiler import record_function
from tqdm import tqdm

from data_utils.schema import PREPROCESS_JSON
from evaluation.frames import mean_scores, score_frames
from scene.audio_augment import perturb_speaker
from scene.avatar import Avatar
from scene.checkpoint import (
    avatar_from_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from scene.dataset import FrameBatch, TalkingHeadDataset, load_splits, read_json
from scene.deformation import DeformationNetwork, Deltas, mouth_region
from scene.densify import DensifyStrategy
from scene.fingerprint import dataset_fingerprint
from scene.gaussians import PARAM_NAMES, init_from_track
from scene.lip_corpus import LipPool, lip_pool, lip_predictor_count
from scene.pose_correction import PoseCorrection
from scene.train_config import RUN_CONTROL, TrainConfig
from utils.atomic import atomic_write_bytes
from utils.cli import UserError
from utils.losses import dssim, l1, psnr, weighted_l1
from utils.lpips import LPIPS, default_lpips_dir, find_lpips_weights
from utils.output_policy import MODEL, check_output


def make_optimizers(avatar: Avatar, cfg: TrainConfig, scene_scale: float) -> dict[str, torch.optim.Adam]:
    """One Adam per Gaussian tensor (gsplat style, lr scaled by sqrt(batch)) plus one for the network."""
    lrs = {
        "means": cfg.optim.lr_means * scene_scale,
        "log_scales": cfg.optim.lr_scales,
        "quats": cfg.optim.lr_quats,
        "opacity_logits": cfg.optim.lr_opacity,
        "color_logits": cfg.optim.lr_colors,
    }
    bs = math.sqrt(cfg.schedule.batch_size)
    params = avatar.gaussians.params
    fused = True if params["means"].is_cuda else None  # one kernel per optimizer: steps are launch-bound
    optimizers = {
        name: torch.optim.Adam([params[name]], lr=lrs[name] * bs, eps=1e-15 / bs, fused=fused)
        for name in PARAM_NAMES
    }
    optimizers["deform"] = torch.optim.Adam(avatar.deform.parameters(), lr=cfg.optim.lr_deform, fused=fused)
    return optimizers


def make_schedulers(
    optimizers: dict[str, torch.optim.Adam], cfg: TrainConfig
) -> dict[str, torch.optim.lr_scheduler.ExponentialLR]:
    """Exponential decay to lr_final_ratio: means over all iterations, the network over the fine stage."""
    return {
        "means": torch.optim.lr_scheduler.ExponentialLR(
            optimizers["means"], cfg.optim.lr_final_ratio ** (1 / max(cfg.schedule.iterations, 1))
        ),
        "deform": network_lr_decay(optimizers["deform"], cfg),
    }


def network_lr_decay(optimizer: torch.optim.Adam, cfg: TrainConfig) -> torch.optim.lr_scheduler.ExponentialLR:
    """The deformation network's exponential decay to lr_final_ratio over the fine stage (step it once per
    fine iteration)."""
    return torch.optim.lr_scheduler.ExponentialLR(
        optimizer, cfg.optim.lr_final_ratio ** (1 / cfg.schedule.fine_steps())
    )


def augment_audio(audio: Tensor, cfg: TrainConfig, norm: dict, generator: torch.Generator) -> Tensor:
    """The fine stage's audio windows [B,C,W] (normalised by `norm`) with --audio_noise (Gaussian) and
    --audio_augment (a speaker perturbation, scene.audio_augment) applied -> [B,C,W]."""
    if cfg.optim.audio_noise > 0:
        noise = torch.randn(audio.shape, generator=generator, device=audio.device)
        audio = audio + cfg.optim.audio_noise * noise
    if cfg.optim.audio_augment > 0:
        audio = perturb_speaker(audio, norm, cfg.optim.audio_augment, generator)
    return audio


def jitter_lips(lips: Tensor, cfg: TrainConfig, generator: torch.Generator) -> Tensor:
    """The tracked lip measures [B,3] that drive the mouth in a fine-stage step: with --lip_code_noise S,
    plus Gaussian noise of std S -> [B,3]."""
    if cfg.optim.lip_code_noise <= 0:
        return lips
    noise = torch.randn(lips.shape, generator=generator, device=lips.device)
    return lips + cfg.optim.lip_code_noise * noise


def lip_loss(
    deform: DeformationNetwork,
    audio: Tensor,
    lips: Tensor,
    cfg: TrainConfig,
    pool: LipPool | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """lambda_lips x the mean squared error of the lip measures the network predicts from audio [B,C,W]
    against the tracked ones [B,3] (audio_code 'lips') -> scalar, summed over the lip predictors (they
    share no weights). With a lip corpus `pool`, the last predictor also learns from lip_corpus_frames of
    its frames (drawn with `generator`), weighed in by the corpus's share; the first, of two, from the
    clip's frames alone."""
    if pool is None:
        return cfg.optim.lambda_lips * (deform.lip_predictions(audio) - lips).square().mean(dim=(1, 2)).sum()
    windows, corpus_lips = pool.sample(cfg.optim.lip_corpus_frames, generator)
    error = (deform.lip_predictions(torch.cat([audio, windows])) - torch.cat([lips, corpus_lips])).square()
    own, corpus = error[:, : len(audio)].mean(dim=(1, 2)), error[-1, len(audio) :].mean()  # one pass
    return cfg.optim.lambda_lips * (own[:-1].sum() + pool.share * own[-1] + (1 - pool.share) * corpus)


def compute_loss(
    image: Tensor,
    batch: FrameBatch,
    deltas: Deltas | None,
    avatar: Avatar,
    cfg: TrainConfig,
    perceptual: LPIPS | None = None,
) -> Tensor:
    """L1 + lambda_dssim * D-SSIM + lambda_mouth * mouth L1 (+ lambda_lpips * LPIPS with `perceptual`;
    + tri-plane TV and |d_xyz|^2 when deformed) of image [B,H,W,3] against the batch -> scalar."""
    gt = batch.image
    loss = l1(image, gt) + cfg.optim.lambda_dssim * dssim(image, gt)
    loss = loss + cfg.optim.lambda_mouth * weighted_l1(image, gt, batch.mouth_mask)
    if perceptual is not None:
        loss = loss + cfg.optim.lambda_lpips * perceptual(image, gt).mean()
    if deltas is not None:
        loss = loss + cfg.optim.lambda_tv * avatar.deform.regularization()
        loss = loss + cfg.optim.lambda_dxyz * deltas.d_xyz.float().square().mean()
    return loss


VAL_KEYS = {  # evaluation.frames.mean_scores key -> metrics.jsonl / train_summary.json key
    "psnr": "val_psnr",
    "ssim": "val_ssim",
    "face_psnr": "val_psnr_face",
    "face_ssim": "val_ssim_face",
}


@torch.no_grad()
def evaluate(
    avatar: Avatar, dataset: TalkingHeadDataset, stage: str, cfg: TrainConfig
) -> tuple[dict[str, float], Tensor, Tensor]:
    """Validation PSNR/SSIM (full frame and face box, evaluation.frames.score_frames, per-frame means) on
    <= num_eval_frames evenly spaced frames -> (metrics, renders [K,H,W,3], ground truth [K,H,W,3]); with
    the lip code and a dataset loaded with its lips, also val_lip_corr."""
    indices = dataset.evenly_spaced(cfg.log.num_eval_frames)
    renders, gts, rects = [], [], []
    for chunk in indices.split(max(cfg.schedule.batch_size, 1)):
        batch = dataset.get(chunk)
        renders.append(avatar.render(batch, stage, cfg.schedule.backend).image.clamp(0, 1))
        gts.append(batch.image)
        rects.append(batch.face_rect)
    pred, gt, rect = torch.cat(renders), torch.cat(gts), torch.cat(rects)
    metrics = {VAL_KEYS[k]: v for k, v in mean_scores(score_frames(pred, gt, rect)).items()}
    if avatar.deform_cfg.audio_code == "lips" and stage == "fine" and dataset.lips is not None:
        metrics["val_lip_corr"] = lip_prediction_corr(avatar, dataset)
    return metrics, pred, gt


@torch.no_grad()
def lip_prediction_corr(avatar: Avatar, dataset: TalkingHeadDataset) -> float:
    """Pearson correlation, over every frame of `dataset`, of the outer-lip opening the audio predicts
    with the tracked one (audio_code 'lips'; NaN when either is constant)."""
    predicted = torch.cat([avatar.deform.predict_lips(a) for a in dataset.audio.split(64)])[:, 0].double()
    tracked = dataset.lips[:, 0].double()
    p, t = predicted - predicted.mean(), tracked - tracked.mean()
    return float((p * t).sum() / (p.norm() * t.norm()))


def write_preview(path: Path, renders: Tensor, gts: Tensor) -> None:
    """JPEG of renders [K,H,W,3] (top row) above ground truth [K,H,W,3] (bottom row)."""
    grid = torch.cat([torch.cat(list(renders), dim=1), torch.cat(list(gts), dim=1)], dim=0)
    buffer = io.BytesIO()
    Image.fromarray((grid.clamp(0, 1) * 255).round().byte().cpu().numpy()).save(
        buffer, format="JPEG", quality=90
    )
    atomic_write_bytes(path, buffer.getvalue())


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state the loop draws from."""
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what _rng_state saved."""
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["sampler"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@dataclass
class Trainer:
    """The training state: model, data, optimizers, densification and where outputs go."""

    cfg: TrainConfig
    avatar: Avatar
    train_set: TalkingHeadDataset
    val_set: TalkingHeadDataset
    optimizers: dict[str, torch.optim.Adam]
    schedulers: dict[str, torch.optim.lr_scheduler.ExponentialLR]
    strategy: DensifyStrategy
    strategy_state: dict[str, Any]
    generator: torch.Generator
    config: dict[str, Any]
    step: int = 0
    elapsed: float = 0.0
    perceptual: LPIPS | None = None
    pose: PoseCorrection | None = None
    lip_pool: LipPool | None = None

    @property
    def model_path(self) -> Path:
        """The output folder."""
        return Path(self.cfg.model_path)

    def stage(self, step: int) -> str:
        """'coarse' for the first coarse_steps() iterations, then 'fine'."""
        return "coarse" if step <= self.cfg.schedule.coarse_steps() else "fine"

    def save(self) -> Path:
        """Checkpoint of the current step (model, optimizers, schedulers, strategy, RNG states)."""
        state = {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "strategy": self.strategy_state,
            "rng": _rng_state(self.generator),
            "elapsed": self.elapsed,
            "pose_correction": None if self.pose is None else self.pose.state_dict(),
        }
        return save_checkpoint(self.model_path, self.step, self.avatar, self.config, state)

    def train_step(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """One optimisation step -> (loss, rendered image, ground truth), tensors left on the device."""
        stage = self.stage(step)
        with record_function("train.sample"):
            batch = self.train_set.sample(self.cfg.schedule.batch_size, self.generator)
            if stage == "fine":
                batch.audio = augment_audio(batch.audio, self.cfg, self.train_set.audio_norm, self.generator)
            if self.pose is not None:
                batch.viewmat = self.pose(batch.viewmat, batch.index)
        lip_code = self.avatar.deform_cfg.audio_code == "lips" and stage == "fine"
        shown = batch  # what the renderer sees; the losses compare with `batch`
        if lip_code:
            shown = dataclasses.replace(batch, lips=jitter_lips(batch.lips, self.cfg, self.generator))
        out, deltas = self.avatar.render_with_deltas(
            shown, stage, self.cfg.schedule.backend, tracked_lips=lip_code, amp=self.cfg.schedule.bf16
        )
        with record_function("train.loss"):
            loss = compute_loss(out.image, batch, deltas, self.avatar, self.cfg, self.perceptual)
            if lip_code:
                loss = loss + lip_loss(
                    self.avatar.deform, batch.audio, batch.lips, self.cfg, self.lip_pool, self.generator
                )
        with record_function("train.backward"):
            loss.backward()
        with record_function("train.optimizer"):
            for optimizer in self.optimizers.values():
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for name, scheduler in self.schedulers.items():
                if name != "deform" or stage == "fine":
                    scheduler.step()
        with record_function("train.densify"):
            gaussian_opts = {k: self.optimizers[k] for k in PARAM_NAMES}
            self.strategy.step_post_backward(
                self.avatar.gaussians.params, gaussian_opts, self.strategy_state, step, out
            )
        return loss.detach(), out.image.detach(), batch.image

    def validate(self, record: dict[str, Any], preview: bool) -> None:
        """Add validation metrics to record; write previews/iter_<N>.jpg when asked."""
        metrics, renders, gts = evaluate(self.avatar, self.val_set, self.stage(self.step), self.cfg)
        record.update(metrics)
        if self.pose is not None:
            record["pose_correction_deg"], record["pose_correction_t"] = self.pose.magnitudes()
        if preview:
            write_preview(self.model_path / "previews" / f"iter_{self.step}.jpg", renders, gts)


def check_model_output(model_path: Path, source_path: Path, resume: bool, force: bool) -> None:
    """The output-folder policy for model_path (the dataset is its input); --resume needs a checkpoint."""
    check_output(model_path, force or resume, MODEL, (source_path,))
    if resume and latest_checkpoint(model_path) is None:
        raise UserError(f"'{model_path}' has no checkpoint to resume from; drop --resume to start afresh")


def prepare_model_output(model_path: Path, resume: bool, force: bool) -> None:
    """Create model_path; with --force (and no --resume) first delete the earlier run's outputs."""
    if force and not resume:
        for _, path in list_checkpoints(model_path):
            path.unlink()
        for name in ("point_cloud", "previews"):
            shutil.rmtree(model_path / name, ignore_errors=True)
        for name in ("cfg_args", "metrics.jsonl", "train_summary.json"):
            (model_path / name).unlink(missing_ok=True)
    try:
        model_path.mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create '{model_path}': {err.strerror}; choose a writable folder") from err


def _load_data(
    cfg: TrainConfig, device: torch.device, audio_norm: dict | None
) -> tuple[TalkingHeadDataset, TalkingHeadDataset]:
    """Train and val splits at the schedule's resolution on device (val normalised with the train
    statistics)."""
    lips = cfg.deform.audio_code == "lips"
    return load_splits(cfg.source_path, cfg.schedule.resolution, device, audio_norm=audio_norm, lips=lips)


def _new_avatar(
    cfg: TrainConfig, train_set: TalkingHeadDataset, device: torch.device, lip_predictors: int = 1
) -> Avatar:
    """Dense Gaussians on the tracked face (coloured from the first frame) + a zero-initialised network
    with `lip_predictors` audio-to-lip predictors (2 when learning from a lip corpus)."""
    track_path = Path(cfg.source_path) / "track_params.pt"
    if not track_path.is_file():
        raise UserError(f"dataset '{cfg.source_path}' has no track_params.pt; run ./preprocess.sh first")
    try:
        track = torch.load(track_path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserError(
            f"cannot read '{track_path}' ({type(err).__name__}); rerun ./preprocess.sh on the video"
        ) from err
    if not isinstance(track, dict) or "shape" not in track or "R" not in track or "t" not in track:
        raise UserError(f"'{track_path}' lacks 'shape', 'R' or 't'; rerun ./preprocess.sh")
    init = cfg.init
    gaussians = init_from_track(track, init.init_points, cfg.schedule.seed, init_opacity=init.init_opacity)
    first = train_set.get(torch.zeros(1, dtype=torch.long))
    gaussians.set_colors(
        gaussians.colors_from_image(
            first.image[0].cpu(), first.viewmat[0].cpu(), first.K[0].cpu(), first.head_mask[0, ..., 0].cpu()
        )
    )
    bounds = gaussians.bounds()
    pad = 0.1 * (bounds[1] - bounds[0])
    channels, window = train_set.audio_shape
    deform_cfg = dataclasses.replace(
        cfg.deform,
        **mouth_region(torch.as_tensor(track["shape"]).numpy()),
        audio_channels=channels,
        audio_window=window,
        lip_predictors=lip_predictors,
    )
    return Avatar(gaussians, deform_cfg, torch.stack([bounds[0] - pad, bounds[1] + pad])).to(device)


def _perceptual_loss(cfg: TrainConfig, device: torch.device) -> tuple[LPIPS | None, str | None]:
    """(LPIPS network, its weights folder) for the LPIPS term, or (None, None) when lambda_lpips is 0 or,
    with no --lpips_dir given, the default folder lacks the weights; UserError if a given --lpips_dir does."""
    if cfg.optim.lambda_lpips <= 0:
        return None, None
    folder = Path(cfg.optim.lpips_dir).expanduser() if cfg.optim.lpips_dir else default_lpips_dir()
    if cfg.optim.lpips_dir is None and find_lpips_weights(folder) is None:
        print(f"note: LPIPS loss off (no weights in {folder}; see --lpips_dir)", file=sys.stderr)
        return None, None
    return LPIPS.load(folder).to(device), str(folder)


def setup(cfg: TrainConfig, given: dict[str, Any], resume: bool, device: torch.device) -> Trainer:
    """Build a Trainer: fresh from the dataset, or from the latest checkpoint with its saved settings."""
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(latest_checkpoint(Path(cfg.model_path)), device)
        saved = TrainConfig.from_saved(checkpoint["config"]["train"])
        ignored = sorted(k for k in given if k not in RUN_CONTROL + ("source_path", "model_path"))
        if ignored:
            print(f"note: --resume keeps the saved settings; ignoring {', '.join(ignored)}", file=sys.stderr)
        control = {"stop_at": None, **{k: v for k, v in given.items() if k in RUN_CONTROL}}
        cfg = saved.with_values({"model_path": cfg.model_path, "source_path": cfg.source_path, **control})
    if cfg.optim.audio_augment > 0:
        extractor = read_json(Path(cfg.source_path), PREPROCESS_JSON).get("audio_extractor", {}).get("name")
        if extractor not in (None, "logmel"):
            raise UserError(
                f"--audio_augment perturbs log-mel features; the dataset's audio features are "
                f"'{extractor}': leave --audio_augment out"
            )
    torch.manual_seed(cfg.schedule.seed)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if cfg.schedule.tf32 else "highest")
    audio_norm = checkpoint["config"]["audio_norm"] if checkpoint else None
    train_set, val_set = _load_data(cfg, device, audio_norm)
    pool = None
    if cfg.deform.audio_code == "lips":
        pool, pool_line = lip_pool(cfg.optim.lip_corpus, train_set)
        print(pool_line, file=sys.stderr)
    if checkpoint:
        avatar = avatar_from_checkpoint(checkpoint, device)
    else:
        avatar = _new_avatar(cfg, train_set, device, lip_predictors=lip_predictor_count(pool))
    cfg = dataclasses.replace(cfg, deform=avatar.deform_cfg)  # saved whole: with the dataset's fields
    bounds = avatar.bounds
    scene_scale = avatar.scene_scale
    optimizers = make_optimizers(avatar, cfg, scene_scale)
    schedulers = make_schedulers(optimizers, cfg)
    pose = PoseCorrection(len(train_set), scene_scale).to(device) if cfg.optim.lr_pose > 0 else None
    if pose is not None:
        optimizers["pose"] = torch.optim.Adam(pose.parameters(), lr=cfg.optim.lr_pose)
    strategy = DensifyStrategy(cfg.densify, scene_scale, cfg.densify.refine_until(cfg.schedule.iterations))
    generator = torch.Generator(device=device).manual_seed(cfg.schedule.seed)
    perceptual, lpips_weights = _perceptual_loss(cfg, device)
    config = {
        "train": asdict(cfg),
        "deform": avatar.deform_cfg.to_dict(),
        "bounds": bounds.tolist(),
        "audio_extractor": train_set.audio_extractor,
        "audio_norm": train_set.audio_norm,
        "dataset": {**train_set.meta(), "fingerprint": dataset_fingerprint(train_set.root)},
        "lpips_weights": lpips_weights,
    }
    trainer = Trainer(
        cfg, avatar, train_set, val_set, optimizers, schedulers, strategy,
        strategy.initialize_state(avatar.gaussians.num_gaussians, device), generator, config,
        perceptual=perceptual, pose=pose, lip_pool=pool,
    )  # fmt: skip
    if checkpoint:
        for k, o in optimizers.items():
            o.load_state_dict(checkpoint["optimizers"][k])
        for k, s in schedulers.items():
            s.load_state_dict(checkpoint["schedulers"][k])
        trainer.strategy_state = checkpoint["strategy"]
        if pose is not None:
            pose.load_state_dict(checkpoint["pose_correction"])
        _set_rng_state(checkpoint["rng"], generator)
        trainer.step, trainer.elapsed = int(checkpoint["iteration"]), float(checkpoint["elapsed"])
    return trainer


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to path."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run(trainer: Trainer) -> dict[str, Any]:
    """The training loop from trainer.step to the schedule's iterations (or stop_at) -> the last validation
    record."""
    cfg = trainer.cfg
    metrics_path = trainer.model_path / "metrics.jsonl"
    last_val: dict[str, Any] = {}
    if trainer.step == 0:
        last_val = {
            "iteration": 0,
            "stage": "coarse",
            "num_gaussians": trainer.avatar.gaussians.num_gaussians,
        }
        trainer.validate(last_val, preview=False)
        _append_jsonl(metrics_path, last_val)
    schedule = cfg.schedule
    end = schedule.iterations if schedule.stop_at is None else min(schedule.iterations, schedule.stop_at)
    bar = tqdm(
        range(trainer.step + 1, end + 1), initial=trainer.step, total=cfg.schedule.iterations,
        file=sys.stderr, dynamic_ncols=True, desc="train",
    )  # fmt: skip
    tick, tick_step = time.perf_counter(), trainer.step
    for step in bar:
        loss, image, gt = trainer.train_step(step)
        trainer.step = step
        evaluate_now = step % cfg.log.eval_every == 0 or step == end
        if step % cfg.log.log_every == 0 or evaluate_now:
            now = time.perf_counter()
            rate = (step - tick_step) / max(now - tick, 1e-9)
            trainer.elapsed += now - tick
            record = {
                "iteration": step,
                "stage": trainer.stage(step),
                "loss": loss.item(),
                "psnr": psnr(image.clamp(0, 1), gt).item(),
                "num_gaussians": trainer.avatar.gaussians.num_gaussians,
                "it_per_s": rate,
            }
            if evaluate_now:
                trainer.validate(record, preview=step % cfg.log.preview_every == 0 or step == end)
                last_val = record
            _append_jsonl(metrics_path, record)
            postfix = {"loss": f"{record['loss']:.4f}", "psnr": f"{record['psnr']:.2f}"}
            postfix.update(N=str(record["num_gaussians"]), its=f"{rate:.1f}")
            bar.set_postfix(postfix, refresh=False)
            tick, tick_step = time.perf_counter(), step
        if step % cfg.log.save_every == 0 and step != end:
            trainer.save()
    bar.close()
    trainer.elapsed += time.perf_counter() - tick
    return last_val
