#!/usr/bin/env bash
# How the carried files of this run were made (on the 2-core dev machine, from the repository root), for the
# lent H200 (Python 3.12, no mediapipe, gsplat, pocketsphinx or ffmpeg, no internet). Carry them with
# carry=[".carry/site.tar.xz", ".carry/clips", ".carry/audio", ".carry/s26"] and start with `go.sh start`.
set -euo pipefail
echo /.carry/ >> .git/info/exclude
mkdir -p .carry/whl .carry/site .carry/clips .carry/audio .carry/s26
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform linux_x86_64 --platform any -d .carry/whl \
  mediapipe==0.10.21 protobuf==4.25.5 gsplat==1.5.3 imageio-ffmpeg==0.5.1 pocketsphinx==5.0.4
for w in .carry/whl/*.whl; do unzip -q -o "$w" -d .carry/site; done
# Under 64 MiB in all: drop gsplat's bundled glm docs, pocketsphinx's word LM (the phone decoder uses the
# phone LM) and MediaPipe's pose and hand models (its face mesh needs none of them; keep their Python modules,
# which mediapipe.solutions imports).
rm -rf .carry/site/gsplat/cuda/csrc/third_party/glm/doc .carry/site/pocketsphinx/model/en-us/en-us.lm.bin
find .carry/site/mediapipe/modules \( -path '*pose*' -o -path '*hand*' -o -path '*palm*' -o -path '*holistic*' \) \
  -name '*.tflite' -delete
tar -cJf .carry/site.tar.xz -C .carry/site .  # 38 MB
cp ../shared/data/videos/*.mp4 .carry/clips/ && cp ../shared/data/audio/*.wav .carry/audio/
cp docs/results/2026-12-04-linear-corpus-10k-five-clips-h200/{job,go}.sh .carry/s26/
