"""lpstream: an open-marketplace node for live video and real-time AI video."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
