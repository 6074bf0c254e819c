"""What the benchmarks and the end-to-end tests share, one module per concern:

* :mod:`benchmarks.harness.nodes`: the real ``lpstream`` program as a subprocess, the HTTP
  helpers and the publisher command;
* :mod:`benchmarks.harness.browser`: headless Chromium over the DevTools protocol;
* :mod:`benchmarks.harness.objects`: a real S3-compatible server on loopback (moto's server
  mode, reached over HTTP);
* :mod:`benchmarks.harness.av_sync`: a flash-and-beep source and the measures of a WebRTC
  viewer's audio/video offset;
* :mod:`benchmarks.harness.listeners`: ffmpeg listening for RTMP or SRT (restream targets);
* :mod:`benchmarks.harness.toolchain`: what each side of a measurement runs (FFmpeg and x264
  builds, the encoder) and the ffmpeg command line that encodes as lpstream's worker does.

Importing this package imports none of them, so a test that needs only the node helpers does
not load PyAV or Chromium's driver. Benchmarks import from here and the product packages, never
from ``tests``.
"""
