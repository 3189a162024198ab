#!/usr/bin/env bash
# go.sh start | poll SECONDS: start the job in the background from a copy under /tmp, or wait up to SECONDS
# for it and send back what it has so far ($OUT/res.tgz).
set -u
if [ "$1" = start ]; then
  rm -rf /tmp/w && mkdir -p /tmp/w /tmp/site && cp -a . /tmp/w/
  tar -xJf .carry/site.tar.xz -C /tmp/site
  cp /tmp/site/imageio_ffmpeg/binaries/ffmpeg-linux64-v4.2.2 /tmp/ffmpeg && chmod +x /tmp/ffmpeg
  python3 -c "import sys; sys.path.insert(0, '/tmp/site'); import mediapipe, pocketsphinx, gsplat; print('imports ok')"
  setsid nohup bash /tmp/w/.carry/s26/job.sh > /tmp/job.log 2>&1 < /dev/null &
  sleep 5; nvidia-smi --query-gpu=name,memory.used --format=csv
  exit 0
fi
end=$(( $(date +%s) + $2 ))
while [ $(date +%s) -lt $end ] && [ ! -f /tmp/job_done ]; do sleep 10; done
date; cat /tmp/gsplat_build.log 2>/dev/null | tail -2; ls /tmp/speed 2>/dev/null; tail -5 /tmp/job.log
tail -25 /tmp/ab.log 2>/dev/null; ls /tmp/ab/models 2>/dev/null
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
[ -f /tmp/job_done ] && echo JOB_DONE
cd /tmp && tar -czf $OUT/res.tgz --exclude='*.ply' --exclude='*.pth' --exclude='*.mp4' --exclude='data' \
  --exclude='frames' --exclude='*.pt' --exclude='*.npy' --exclude='*.npz' --exclude='events.*' speed ab.log ab 2>/dev/null
cd $OUT && split -b 15M res.tgz res.tgz. && rm res.tgz; ls -la $OUT
