"""The Ray side of train_many: one remote task per step of a subject, and the resources each step asks for
(preprocessing on CPU workers, training and rendering on a fraction 1/per_gpu of a GPU where the cluster has
GPUs, else on CPU workers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from many.stages import StageOptions, StageResult, run_step
from many.subjects import Subject

SYSTEM_RETRIES = 2  # a task whose worker or node died is run again; the step then resumes from disk


@dataclass(frozen=True)
class Resources:
    """What the steps of one subject ask the cluster for."""

    per_gpu: int  # subjects sharing one GPU
    cpus_per_task: int  # CPUs of a preprocessing task (and of a training on a cluster without GPUs)
    cluster_gpus: float  # GPUs of the cluster; 0 = train on CPU workers

    def for_stage(self, stage: str) -> dict[str, float]:
        """Ray resource options (num_cpus, num_gpus) of `stage`."""
        if stage == "preprocess" or self.cluster_gpus == 0:
            return {"num_cpus": self.cpus_per_task, "num_gpus": 0}
        return {"num_cpus": 1, "num_gpus": round(1 / self.per_gpu, 4)}

    def gpu_slots(self) -> int:
        """How many subjects train at once on the whole cluster (0 without GPUs)."""
        return int(self.cluster_gpus) * self.per_gpu


@ray.remote(max_retries=SYSTEM_RETRIES)
def stage_task(stage: str, subject: Subject, opts: StageOptions) -> StageResult:
    """Ray task: run one step of one subject (many.stages.run_step)."""
    return run_step(stage, subject, opts)


def submit(stage: str, subject: Subject, opts: StageOptions, resources: Resources) -> Any:
    """Submit the step `stage` of `subject` with the resources it needs; return its ObjectRef."""
    return stage_task.options(**resources.for_stage(stage)).remote(stage, subject, opts)
