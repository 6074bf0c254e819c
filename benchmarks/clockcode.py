"""A wall clock drawn into video frames, and read back from pixels (NumPy) or a canvas (JS).

How this works:

* The code is a band across the top of the frame, ``BAND_HEIGHT`` of the frame's height, cut
  into ``ROWS`` rows of ``COLUMNS`` cells. Each row opens with a white guard cell and closes
  with a black one; the ``DATA_COLUMNS`` cells between carry one bit each (white is 1).
* The 64 bits are a 48-bit timestamp (milliseconds since the Unix epoch, big-endian) and the
  CRC-16/XMODEM of its six bytes (``binascii.crc_hqx`` with 0 as the start value).
* Everything is in fractions of the frame, so a reader needs no size: it averages the middle
  half of each cell (edges blur under scaling and DCT), takes each row's threshold halfway
  between its two guards, and refuses a frame whose guards are too close (no code there) or
  whose CRC is wrong (a damaged code). A refused frame is counted as unreadable, never read
  as a wrong time.
* Cells are about 38 x 54 pixels at 1280x720 and 12 x 18 at 426x240, far above what x264
  smears at ordinary bitrates; luma is 16 and 235 (video range), chroma under the band grey.

``JS_READER`` is the same reader for a browser: ``readClock(rgba, width, height)`` on the
``ImageData`` of a canvas onto which the band was drawn (at any size), returning the
milliseconds or ``null``.
"""

from __future__ import annotations

import binascii
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BAND_HEIGHT",
    "COLUMNS",
    "JS_READER",
    "ROWS",
    "band_rows",
    "draw_clock",
    "read_clock",
    "read_clock_rgb",
]

ROWS = 2
COLUMNS = 34
"""Per row: a white guard, ``DATA_COLUMNS`` bits, a black guard."""
DATA_COLUMNS = COLUMNS - 2
BAND_HEIGHT = 0.15
"""The band's height as a fraction of the frame's."""
TIME_BITS = 48
CRC_BITS = 16
BLACK, WHITE = 16, 235
MIN_CONTRAST = 64
"""Least luma difference between a row's guards for the row to be read."""

assert ROWS * DATA_COLUMNS == TIME_BITS + CRC_BITS

U8 = npt.NDArray[np.uint8]


def band_rows(height: int) -> int:
    """Pixel rows of the band in a frame ``height`` pixels high."""
    return max(ROWS, round(height * BAND_HEIGHT))


def _bits(ms: int) -> list[int]:
    if not 0 <= ms < 1 << TIME_BITS:
        raise ValueError(f"{ms} ms does not fit in {TIME_BITS} bits")
    data = ms.to_bytes(TIME_BITS // 8, "big")
    word = (ms << CRC_BITS) | binascii.crc_hqx(data, 0)
    total = TIME_BITS + CRC_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def _edges(length: int, count: int) -> list[int]:
    return [round(i * length / count) for i in range(count + 1)]


def draw_clock(luma: U8, ms: int) -> None:
    """Draws ``ms`` into the top band of a luma plane (``height x width``, modified in place).

    The caller keeps chroma grey under the band (128) so the code is black and white.
    """
    height, width = luma.shape
    xs = _edges(width, COLUMNS)
    ys = _edges(band_rows(height), ROWS)
    bits = _bits(ms)
    for row in range(ROWS):
        cells = [1, *bits[row * DATA_COLUMNS : (row + 1) * DATA_COLUMNS], 0]
        for column, bit in enumerate(cells):
            value = WHITE if bit else BLACK
            luma[ys[row] : ys[row + 1], xs[column] : xs[column + 1]] = value


def _cell_means(luma: npt.NDArray[Any]) -> npt.NDArray[np.float64] | None:
    height, width = luma.shape
    if width < COLUMNS * 2 or height < 8:
        return None
    xs = _edges(width, COLUMNS)
    ys = _edges(band_rows(height), ROWS)
    means = np.empty((ROWS, COLUMNS))
    for row in range(ROWS):
        y0, y1 = ys[row], ys[row + 1]
        qy = (y1 - y0) // 4
        for column in range(COLUMNS):
            x0, x1 = xs[column], xs[column + 1]
            qx = (x1 - x0) // 4
            cell = luma[y0 + qy : y1 - qy, x0 + qx : x1 - qx]
            means[row, column] = float(cell.mean())
    return means


def read_clock(luma: npt.NDArray[Any]) -> int | None:
    """The milliseconds drawn in a luma plane (``height x width``), or None if unreadable."""
    means = _cell_means(luma)
    if means is None:
        return None
    bits: list[int] = []
    for row in range(ROWS):
        white, black = means[row, 0], means[row, -1]
        if white - black < MIN_CONTRAST:
            return None
        threshold = (white + black) / 2
        bits.extend(int(v > threshold) for v in means[row, 1:-1])
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    ms, crc = word >> CRC_BITS, word & ((1 << CRC_BITS) - 1)
    if binascii.crc_hqx(ms.to_bytes(TIME_BITS // 8, "big"), 0) != crc:
        return None
    return ms


def read_clock_rgb(rgb: npt.NDArray[Any]) -> int | None:
    """The milliseconds drawn in an RGB image (``height x width x 3``), or None."""
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return read_clock(luma)


JS_READER = """
const CLOCK = {rows: ROWS, columns: COLUMNS, band: BAND, minContrast: CONTRAST};
function clockBandRows(height) {
  return Math.max(CLOCK.rows, Math.round(height * CLOCK.band));
}
function clockCrc16(bytes) {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}
// rgba: the band only (ImageData.data of a canvas the band was drawn onto), width x height.
function readClock(rgba, width, height) {
  const edges = (length, count) =>
    Array.from({length: count + 1}, (_, i) => Math.round(i * length / count));
  const xs = edges(width, CLOCK.columns), ys = edges(height, CLOCK.rows);
  const bits = [];
  for (let row = 0; row < CLOCK.rows; row++) {
    const y0 = ys[row], y1 = ys[row + 1], qy = Math.floor((y1 - y0) / 4);
    const means = [];
    for (let column = 0; column < CLOCK.columns; column++) {
      const x0 = xs[column], x1 = xs[column + 1], qx = Math.floor((x1 - x0) / 4);
      let sum = 0, n = 0;
      for (let y = y0 + qy; y < y1 - qy; y++) {
        for (let x = x0 + qx; x < x1 - qx; x++) {
          const i = (y * width + x) * 4;
          sum += 0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2];
          n++;
        }
      }
      means.push(n ? sum / n : 0);
    }
    const white = means[0], black = means[CLOCK.columns - 1];
    if (white - black < CLOCK.minContrast) return null;
    const threshold = (white + black) / 2;
    for (let c = 1; c < CLOCK.columns - 1; c++) bits.push(means[c] > threshold ? 1 : 0);
  }
  // 48 bits of time then 16 of CRC; JS bit operators are 32-bit, so build with arithmetic.
  let ms = 0;
  for (let i = 0; i < 48; i++) ms = ms * 2 + bits[i];
  let crc = 0;
  for (let i = 48; i < 64; i++) crc = crc * 2 + bits[i];
  const bytes = [];
  for (let i = 0; i < 6; i++) bytes.push(Math.floor(ms / 2 ** (8 * (5 - i))) % 256);
  return clockCrc16(bytes) === crc ? ms : null;
}
""".replace(
    "CLOCK = {rows: ROWS, columns: COLUMNS, band: BAND, minContrast: CONTRAST}",
    f"CLOCK = {{rows: {ROWS}, columns: {COLUMNS}, band: {BAND_HEIGHT}, "
    f"minContrast: {MIN_CONTRAST}}}",
)
