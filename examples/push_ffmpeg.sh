#!/usr/bin/env bash
# Pushes a 720p30 test pattern with a tone to a gateway over RTMP, in real time, until stopped.
# Usage: examples/push_ffmpeg.sh [STREAM] [RTMP_BASE]   (defaults: mine rtmp://127.0.0.1:1935/live)
set -euo pipefail
stream="${1:-mine}"
base="${2:-rtmp://127.0.0.1:1935/live}"
exec ffmpeg -hide_banner -loglevel warning -re \
    -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \
    -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p -c:a aac -b:a 96k \
    -f flv "$base/$stream"
