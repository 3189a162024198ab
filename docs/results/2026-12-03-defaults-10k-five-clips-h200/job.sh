#!/usr/bin/env bash
# Device job planned for session 24: the defaults at 10k on all five clips (seed 0, five at once), with the
# lip-code split (lip code score / render follows); then each model's 5000-iteration checkpoint driven by the
# same speakers, to see on the same runs whether the prediction or the renderer loses the sync from 5k to 10k.
export PYTHONPATH=/tmp/site:/tmp/w EGSTALKER_PYTHON=python3 IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
cd /tmp/w
C=/tmp/w/.carry/clips; A=/tmp/w/.carry/audio
python3 -c "from gsplat.cuda._backend import _C; print('gsplat ok', _C)" > /tmp/gsplat_build.log 2>&1
echo "gsplat rc=$?" >> /tmp/gsplat_build.log
# interleaved render speed, one and two lip predictors, on the quiet GPU before the trainings
mkdir -p /tmp/speed
for round in 1 2; do for k in 1 2; do
  python3 -m bench.render_speed --synthetic 80000 --lip_predictors $k --batch_sizes 1 32 --variants bf16+cache \
    --runs 30 --breakdown --out /tmp/speed/r${round}_p${k}.json >> /tmp/speed/speed.log 2>&1
done; done
touch /tmp/speed_done

python3 -m bench.ab --videos $C/*.mp4 --audio $A/*.wav --arm "ens=" --seeds 0 \
  --iterations 10000 --parallel 5 --eval_parallel 5 --output_dir /tmp/ab10k > /tmp/ab10k.log 2>&1
for m in /tmp/ab10k/models/*; do
  r=$(basename $m); d=/tmp/ab10k/data/${r%%__ens__*}__visemes
  python3 -m bench.cross_driven --model_path $m --reference_path $d --audio $A/*.wav \
    --output_dir /tmp/ab10k/cross5k/$r --predict_args "--iteration 5000" >> /tmp/ab10k/cross5k.log 2>&1 &
done
wait
touch /tmp/job_done
