#!/usr/bin/env bash
# Device job of session 23: gsplat build (serial), the 10k A/B of --lip_code_noise 0.3 on the three clips furthest
# from the targets (seed 0), three at once; then the render speed of 1 vs 2 lip predictors (stacked).
export PYTHONPATH=/tmp/site:/tmp/w EGSTALKER_PYTHON=python3 IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
cd /tmp/w
C=/tmp/w/.carry/clips; A=/tmp/w/.carry/audio
python3 -c "from gsplat.cuda._backend import _C; print('gsplat ok', _C)" > /tmp/gsplat_build.log 2>&1
echo "gsplat rc=$?" >> /tmp/gsplat_build.log
python3 -m bench.ab --videos $C/hdtf_WDA_BobMenendez_000.mp4 $C/hdtf_WDA_KatieHill_000.mp4 $C/vrt_face5_woman_glasses.mp4 --audio $A/*.wav --arm "jit=--lip_code_noise 0.3" --seeds 0 \
  --iterations 10000 --parallel 3 --eval_parallel 3 --output_dir /tmp/ab10k > /tmp/ab10k.log 2>&1
mkdir -p /tmp/speed
for n in 1 2; do
  timeout 80 python3 -m bench.render_speed --synthetic 80000 --lip_predictors $n --variants cache bf16+cache --runs 30 \
    --breakdown --out /tmp/speed/syn${n}_$RANDOM.json >> /tmp/speed/speed.log 2>&1
done
touch /tmp/job_done
