"""A lip corpus: other speakers' audio windows and tracked lip measures, which the lip code's second
audio-to-lips predictor learns from beside the subject's own few seconds (one speaker's 5-20 s cannot teach
it which sounds open the mouth; several speakers' phones can); the first learns from the subject alone and
the mouth follows their mean. A corpus is made from datasets of preprocess.sh by
`python -m scene.lip_corpus DATA... --out FILE`; one made from the development clips ships with the
package (DEFAULT_CORPUS)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from data_utils.schema import PREPROCESS_JSON
from scene.dataset import TalkingHeadDataset, load_splits, with_face
from utils.atomic import atomic_write_bytes
from utils.cli import ArgumentParser, UserError, run_cli

DEFAULT_CORPUS = Path(__file__).parent / "assets" / "lip_corpus_visemes.npz"
FORMAT_VERSION = 1
# The clip's own frames weigh at least this part of the corpus predictor's lip loss. At their share of the
# pooled frames (5-8 % for a 5-8 s clip beside the shipped corpus) the corpus's mapping overrode the clip's
# when it was the only predictor: vrt_face1's held-out render lost 4.6 dB. At half, the cross-validated
# predictor kept the clip's fit and the corpus's gains (docs/experiments/2026-12-02-lip-corpus.md).
MIN_OWN_SHARE = 0.5
LOAD_SIZE = 16  # px the datasets are loaded at: only their audio windows and lip measures are read


def own_share(own_frames: int, corpus_frames: int) -> float:
    """The part of the lip loss the clip's frames weigh beside a corpus: their share of the pooled frames,
    at least MIN_OWN_SHARE."""
    return max(own_frames / (own_frames + corpus_frames), MIN_OWN_SHARE)


@dataclass
class LipCorpus:
    """Frames of several subjects: their normalised audio windows [N,C,W], standardised lip measures [N,3]
    (each by its own clip's training statistics, as TalkingHeadDataset gives them) and subject index [N]."""

    extractor: dict  # {"name", "settings"} of the features, as preprocess.json records them
    subjects: list[str]  # source_id of each subject
    windows: np.ndarray  # float32 [N,C,W]
    lips: np.ndarray  # float32 [N,3]
    subject: np.ndarray  # int64 [N], index into subjects

    def without(self, source: str) -> LipCorpus:
        """The corpus less the frames of the subject whose source_id is `source` (unchanged when absent)."""
        if source not in self.subjects:
            return self
        drop = self.subjects.index(source)
        keep = self.subject != drop
        remap = np.cumsum([k != drop for k in range(len(self.subjects))]) - 1
        return LipCorpus(
            self.extractor,
            [s for k, s in enumerate(self.subjects) if k != drop],
            self.windows[keep],
            self.lips[keep],
            remap[self.subject[keep]],
        )


def source_id(dataset: Path) -> str:
    """The recording a dataset was made from, '<video file name>:<its bytes>' (preprocess.json), so that a
    corpus can leave out the subject being trained."""
    meta = json.loads((Path(dataset) / PREPROCESS_JSON).read_text())
    return f"{Path(meta.get('video', dataset)).name}:{meta.get('source', {}).get('bytes', 0)}"


def corpus_from_datasets(datasets: list[Path]) -> LipCorpus:
    """A corpus of every frame with a face of `datasets` (train and val splits), which must share their audio
    extractor and frame rate; UserError otherwise."""
    windows, lips, subject, subjects, extractor, fps = [], [], [], [], None, None
    for k, root in enumerate(datasets):
        train, val = load_splits(root, LOAD_SIZE, targets=False, lips=True)
        if extractor is None:
            extractor, fps = train.audio_extractor, train.fps
        elif train.audio_extractor != extractor or train.fps != fps:
            raise UserError(
                f"'{root}' has {train.audio_extractor['name']} features at {train.fps} fps, the first "
                f"dataset {extractor['name']} at {fps}; preprocess them all with the same --audio_extractor"
            )
        w = np.concatenate([train.audio.numpy(), val.audio.numpy()])
        m = np.concatenate([train.lips.numpy(), val.lips.numpy()])
        face = with_face(m)
        windows.append(w[face])
        lips.append(m[face])
        subject.append(np.full(int(face.sum()), k))
        subjects.append(source_id(root))
    if extractor is None:
        raise UserError("give at least one dataset")
    return LipCorpus(
        {**extractor, "fps": fps},
        subjects,
        np.concatenate(windows).astype(np.float32),
        np.concatenate(lips).astype(np.float32),
        np.concatenate(subject).astype(np.int64),
    )


def save_corpus(path: Path, corpus: LipCorpus) -> None:
    """Write `corpus` to `path` (compressed .npz, windows as float16) atomically."""
    buffer = io.BytesIO()
    meta = {"format_version": FORMAT_VERSION, "extractor": corpus.extractor, "subjects": corpus.subjects}
    np.savez_compressed(
        buffer,
        meta=np.array(json.dumps(meta)),
        windows=corpus.windows.astype(np.float16),
        lips=corpus.lips.astype(np.float32),
        subject=corpus.subject.astype(np.int16),
    )
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_corpus(path: Path) -> LipCorpus:
    """The corpus saved at `path`; UserError when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"lip corpus '{path}' not found; make one with python -m scene.lip_corpus")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            corpus = LipCorpus(
                meta["extractor"],
                list(meta["subjects"]),
                f["windows"].astype(np.float32),
                f["lips"].astype(np.float32),
                f["subject"].astype(np.int64),
            )
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"'{path}' is not a lip corpus ({type(err).__name__}); make one with python -m scene.lip_corpus"
        ) from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"'{path}' has lip corpus format {meta.get('format_version')}, this version reads 1")
    return corpus


@dataclass
class LipPool:
    """A corpus on the training device, drawn from beside the subject's own frames: the lip loss weighs the
    subject's frames by `share` (own_share) and the corpus's by 1 - share."""

    windows: Tensor  # [N,C,W]
    lips: Tensor  # [N,3]
    share: float

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`count` random frames -> (audio windows [count,C,W], lip measures [count,3])."""
        idx = torch.randint(len(self.lips), (count,), generator=generator, device=generator.device)
        idx = idx.to(self.lips.device)
        return self.windows[idx], self.lips[idx]


def _features(extractor: dict) -> str:
    """'NAME features (SETTINGS, FPS fps)' of an audio extractor record with its frame rate."""
    return f"{extractor['name']} features ({extractor.get('settings')}, {extractor.get('fps')} fps)"


def lip_predictor_count(pool: LipPool | None) -> int:
    """How many audio-to-lip predictors a model learning from `pool` has: 2 with a corpus, else 1."""
    return 1 if pool is None else 2


def lip_pool(setting: str, dataset: TalkingHeadDataset) -> tuple[LipPool | None, str]:
    """The corpus that --lip_corpus `setting` names ('default', 'none' or a file) for the training split
    `dataset`, less the dataset's own recording, on its device -> (pool or None, a line saying what is used).
    When the corpus's audio features differ from the dataset's: None for the shipped one, else UserError."""
    if setting == "none":
        return None, "lip corpus: none"
    corpus = load_corpus(DEFAULT_CORPUS if setting == "default" else Path(setting))
    want = {**dataset.audio_extractor, "fps": dataset.fps}
    if corpus.extractor != want:
        theirs, mine = _features(corpus.extractor), _features(want)
        if setting == "default":
            note = f"the shipped one has {theirs}, this dataset {mine}; python -m scene.lip_corpus makes one"
            return None, f"lip corpus: none ({note})"
        raise UserError(
            f"lip corpus '{setting}' has {theirs}, the dataset {mine}; make a corpus from datasets "
            "preprocessed like it (python -m scene.lip_corpus), or pass --lip_corpus none"
        )
    own = source_id(dataset.root)
    left = corpus.without(own)
    if not len(left.lips):
        return None, "lip corpus: none left (it holds only this recording)"
    count = len(dataset.lips)
    pool = LipPool(
        torch.from_numpy(left.windows).to(dataset.device),
        torch.from_numpy(left.lips).to(dataset.device),
        own_share(count, len(left.lips)),
    )
    dropped = " (this recording left out)" if left is not corpus else ""
    return pool, (
        f"lip corpus: {len(left.subjects)} other subjects, {len(left.lips)} frames{dropped}; two lip "
        f"predictors: the clip's own, and one where its {count} frames weigh {pool.share:.0%} beside these"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = ArgumentParser(
        prog="python -m scene.lip_corpus",
        description="Make a lip corpus (audio windows and tracked lip measures of several subjects) that "
        "train.sh --lip_corpus learns the audio-to-lips prediction from beside the subject's own frames.",
    )
    p.add_argument("datasets", type=Path, nargs="+", help="datasets made by preprocess.sh (same extractor)")
    p.add_argument("--out", type=Path, required=True, help="the corpus file to write (.npz)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    return p


def main(argv: list[str] | None = None) -> int:
    """Build the corpus from the datasets, write it, print what it holds."""
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.force:
        raise UserError(f"'{args.out}' exists; pass --force to overwrite it")
    corpus = corpus_from_datasets(args.datasets)
    save_corpus(args.out, corpus)
    counts = np.bincount(corpus.subject, minlength=len(corpus.subjects))
    for name, count in zip(corpus.subjects, counts, strict=True):
        print(f"  {name:<48} {count:>6} frames")
    print(
        f"lip corpus: {len(corpus.subjects)} subjects, {len(corpus.lips)} frames of "
        f"{corpus.extractor['name']} features -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
