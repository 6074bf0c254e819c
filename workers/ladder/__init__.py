"""The parts of the ladder transcoder; ``workers.transcode`` is what callers use.

``plan.py`` decides each rendition (size, frame rate, frame-rate conversion, queue and mux
settings) and ``encoding.py`` its encoder options; ``decode.py`` runs the demux/decode loop
that feeds the renditions; ``rendition.py`` scales, encodes and muxes one rendition on its own
thread; ``audio.py`` copies the source's audio.
"""
