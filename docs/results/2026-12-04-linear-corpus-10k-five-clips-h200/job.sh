#!/usr/bin/env bash
# Session 26: linear_corpus vs the 10k defaults on all five clips (seed 0, five at once), with the interleaved
# render speed of attention vs linear_corpus (two lip predictors, synthetic 80k) on the quiet GPU first.
export PYTHONPATH=/tmp/site:/tmp/w EGSTALKER_PYTHON=python3 IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
cd /tmp/w
C=/tmp/w/.carry/clips; A=/tmp/w/.carry/audio
python3 -c "from gsplat.cuda._backend import _C; print('gsplat ok', _C)" > /tmp/gsplat_build.log 2>&1
echo "gsplat rc=$?" >> /tmp/gsplat_build.log
mkdir -p /tmp/speed
for round in 1 2; do for enc in attention linear_corpus; do
  python3 -m bench.render_speed --synthetic 80000 --lip_predictors 2 --lip_encoder $enc --batch_sizes 1 32 \
    --variants bf16+cache --runs 30 --breakdown --out /tmp/speed/r${round}_${enc}.json >> /tmp/speed/speed.log 2>&1
done; done
touch /tmp/speed_done
python3 -m bench.ab --videos $C/*.mp4 --audio $A/*.wav --arm "linc=--lip_encoder linear_corpus" --seeds 0 \
  --iterations 10000 --parallel 5 --eval_parallel 5 --output_dir /tmp/ab > /tmp/ab.log 2>&1
touch /tmp/job_done
