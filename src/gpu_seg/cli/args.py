"""Argument types shared by the ``gpu-seg`` commands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import math

__all__ = ["non_negative_float", "non_negative_int", "output_size", "positive_int", "tensor_shape"]


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite non-negative number")
    return value


def _sizes(text: str, count: int, form: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    if len(parts) != count:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form {form}")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form {form} (integers)") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be positive")
    return values


def output_size(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(width, height)``."""
    width, height = _sizes(text, 2, "WxH")
    return width, height


def tensor_shape(text: str) -> tuple[int, int, int]:
    """``HxWxC`` -> ``(H, W, C)``."""
    h, w, c = _sizes(text, 3, "HxWxC")
    return h, w, c
