"""nibble's exception: every C++ nibble::Error arrives as NibbleError with the C++ message."""
from __future__ import annotations

from ._native import NibbleError

__all__ = ["NibbleError"]
