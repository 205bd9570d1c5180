"""Image -> model input tensor, exactly as MediaPipe's CPU ``ImageToTensorCalculator`` does it.

MediaPipe's ``ImageSegmenter`` (3-channel models, CPU image) runs ``ImageToTensorCalculator``
with a full-image region of interest, no rotation, no aspect-ratio padding, ``BORDER_REPLICATE``
and ``INTER_LINEAR`` (``image_to_tensor_converter_opencv.cc``). That converter:

1. maps the ROI's corners (``cv::boxPoints``: bottom-left, top-left, top-right, bottom-right, i.e.
   ``(0, H), (0, 0), (W, 0), (W, H)`` for the whole image) onto the tensor's corners
   ``(0, h), (0, 0), (w, 0), (w, h)`` with ``cv::getPerspectiveTransform`` (an 8x8 linear
   system solved by Gaussian elimination with partial pivoting, in double);
2. warps the **uint8** image with ``cv::warpPerspective``, which inverts the matrix (3x3
   adjugate / determinant), maps every output pixel centre ``(x, y)`` (integer coordinates:
   corner-origin scaling, *not* half-pixel) to a source position rounded to 1/32 pixel, and
   blends the 2x2 neighbourhood with 15-bit fixed-point bilinear weights, rounding to uint8;
3. converts to float32 with ``convertTo(scale, offset)``, where the value range
   ``[(0 - mean) / std, (255 - mean) / std]`` comes from the input's normalisation metadata:
   ``scale = (max - min) / 255``, ``offset = min``, each step in float32.

OpenCV 4.11+ replaced ``warpPerspective``'s fixed-point kernels with float ones (results differ
by up to 4 levels), so this module does not call ``cv2.warpPerspective``: it builds the classic
fixed-point maps itself (what the MediaPipe wheel's OpenCV computes) and blends with them, through
``cv2.remap`` (whose fixed-point path is the classic one; checked once per process) when OpenCV is
importable, else in numpy. The numpy path is separable when, as for the axis-aligned ROI, source
columns depend on the output column only and rows on the output row only.

Conventions: images are uint8 ``(H, W, 3)`` RGB (or ``(H, W, 4)`` RGBA, alpha dropped after the
warp as MediaPipe does), row 0 = top; tensors are ``(1, h, w, 3)``, channel-interleaved.
"""

from __future__ import annotations

import collections
import functools
import logging
import numbers
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import forks
from ..errors import InputError
from .metadata import Normalization

__all__ = [
    "MAX_IMAGE_DIM",
    "ImageToTensor",
    "check_image",
    "perspective_matrix",
    "value_transform",
    "warp_maps",
]

log = logging.getLogger("gpu_seg")

#: Sub-pixel resolution of OpenCV's fixed-point warp (``INTER_BITS`` = 5).
_TAB_BITS = 5
_TAB_SIZE = 1 << _TAB_BITS
#: Fixed-point bilinear weights sum to ``1 << 15``; products of two 1/32 weights need 10 bits.
_WEIGHT_SHIFT = 2 * _TAB_BITS
#: The largest image side, in pixels. ``cv2.remap`` (like the ``cv::warpPerspective`` MediaPipe calls,
#: which remaps through it) asserts that both images' sides are below ``SHRT_MAX`` (32767); its
#: integer source coordinates are int16.
MAX_IMAGE_DIM = 32766
#: Warp plans kept per input image size (least recently used are dropped).
PLAN_CACHE_SIZE = 8


def check_image(image: object, argument: str = "image") -> np.ndarray:
    """``image`` as a C-contiguous uint8 ``(H, W, 3|4)`` array, sides 1..MAX_IMAGE_DIM; else InputError."""
    if not isinstance(image, np.ndarray):
        raise InputError(argument, f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(argument, f"dtype {image.dtype}; expected uint8 RGB")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(argument, f"shape {image.shape}; expected (H, W, 3) RGB or (H, W, 4) RGBA")
    height, width = image.shape[:2]
    if not (1 <= height <= MAX_IMAGE_DIM and 1 <= width <= MAX_IMAGE_DIM):
        raise InputError(argument, f"size {width}x{height} is outside 1..{MAX_IMAGE_DIM} pixels per side")
    return np.ascontiguousarray(image)


def _solve_gaussian(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve ``a x = b`` (double): elimination with partial pivoting, then back substitution.

    The order of operations is OpenCV's ``DECOMP_LU`` (``hal::LU64f``), which decides the last
    bits of the warp matrix and with them the rounding of sub-pixel positions at exact ties.
    """
    n = len(b)
    for col in range(n):
        pivot = col
        for row in range(col + 1, n):
            if abs(a[row][col]) > abs(a[pivot][col]):
                pivot = row
        if a[pivot][col] == 0.0:
            raise InputError("image", "degenerate region of interest (singular transform)")
        if pivot != col:
            a[col], a[pivot] = a[pivot], a[col]
            b[col], b[pivot] = b[pivot], b[col]
        neg_inv = -1.0 / a[col][col]
        for row in range(col + 1, n):
            factor = a[row][col] * neg_inv
            for k in range(col + 1, n):
                a[row][k] += factor * a[col][k]
            b[row] += factor * b[col]
    for row in range(n - 1, -1, -1):
        acc = b[row]
        for k in range(row + 1, n):
            acc -= a[row][k] * b[k]
        b[row] = acc / a[row][row]
    return b


def perspective_matrix(image_size: tuple[int, int], tensor_size: tuple[int, int]) -> np.ndarray:
    """``cv::getPerspectiveTransform`` from the whole image's ROI corners to the tensor's corners.

    Args:
        image_size, tensor_size: ``(width, height)``.

    Returns:
        float64 ``(3, 3)``, mapping image coordinates to tensor coordinates.
    """
    f32 = np.float32
    width, height = (f32(v) for v in image_size)
    tw, th = (f32(v) for v in tensor_size)
    # cv::boxPoints of the ROI (centre (W/2, H/2), size (W, H), angle 0): bottom-left, top-left,
    # top-right, bottom-right. Its float32 arithmetic is exact for sizes below 2**24.
    src = [(f32(0), height), (f32(0), f32(0)), (width, f32(0)), (width, height)]
    dst = [(f32(0), th), (f32(0), f32(0)), (tw, f32(0)), (tw, th)]
    a = [[0.0] * 8 for _ in range(8)]
    b = [0.0] * 8
    for i, ((sx, sy), (dx, dy)) in enumerate(zip(src, dst, strict=True)):
        a[i][0:3] = [float(sx), float(sy), 1.0]
        a[i + 4][3:6] = [float(sx), float(sy), 1.0]
        # The products are float32 in OpenCV (Point2f arithmetic).
        a[i][6], a[i][7] = float(-sx * dx), float(-sy * dx)
        a[i + 4][6], a[i + 4][7] = float(-sx * dy), float(-sy * dy)
        b[i], b[i + 4] = float(dx), float(dy)
    return np.array([*_solve_gaussian(a, b), 1.0], dtype=np.float64).reshape(3, 3)


def _invert_3x3(m: np.ndarray) -> np.ndarray:
    """``cv::invert`` of a 3x3 double matrix (``DECOMP_LU``: the adjugate over the determinant)."""
    s = [[float(v) for v in row] for row in m]
    det = (
        s[0][0] * (s[1][1] * s[2][2] - s[1][2] * s[2][1])
        - s[0][1] * (s[1][0] * s[2][2] - s[1][2] * s[2][0])
        + s[0][2] * (s[1][0] * s[2][1] - s[1][1] * s[2][0])
    )
    if det == 0.0:
        raise InputError("image", "degenerate region of interest (singular transform)")
    d = 1.0 / det
    return np.array(
        [
            (s[1][1] * s[2][2] - s[1][2] * s[2][1]) * d,
            (s[0][2] * s[2][1] - s[0][1] * s[2][2]) * d,
            (s[0][1] * s[1][2] - s[0][2] * s[1][1]) * d,
            (s[1][2] * s[2][0] - s[1][0] * s[2][2]) * d,
            (s[0][0] * s[2][2] - s[0][2] * s[2][0]) * d,
            (s[0][2] * s[1][0] - s[0][0] * s[1][2]) * d,
            (s[1][0] * s[2][1] - s[1][1] * s[2][0]) * d,
            (s[0][1] * s[2][0] - s[0][0] * s[2][1]) * d,
            (s[0][0] * s[1][1] - s[0][1] * s[1][0]) * d,
        ]
    ).reshape(3, 3)


def warp_maps(matrix: np.ndarray, tensor_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-point maps ``cv::warpPerspective`` builds for ``matrix`` (image -> tensor).

    Returns:
        ``(xy, frac)``: int16 ``(h, w, 2)`` integer source coordinates (x, y) and uint16
        ``(h, w)`` sub-pixel index ``(y_frac * 32 + x_frac)``, as ``cv::remap`` takes them.

    The output is processed in blocks of 64 columns (``x = x_block + x1``), as OpenCV does; the
    block start enters the double arithmetic, so it is kept.
    """
    tw, th = tensor_size
    m = _invert_3x3(matrix).ravel()
    block_h = min(16, th)
    block_w = min(1024 // block_h, tw)
    xy = np.empty((th, tw, 2), np.int16)
    frac = np.empty((th, tw), np.uint16)
    ys = np.arange(th, dtype=np.float64)[:, None]
    for x0 in range(0, tw, block_w):
        x1 = np.arange(min(block_w, tw - x0), dtype=np.float64)[None, :]
        xr = m[0] * x0 + m[1] * ys + m[2]
        yr = m[3] * x0 + m[4] * ys + m[5]
        wr = m[6] * x0 + m[7] * ys + m[8]
        w = wr + m[6] * x1
        with np.errstate(divide="ignore"):
            w = np.where(w != 0, _TAB_SIZE / np.where(w != 0, w, 1.0), 0.0)
        limit = float(np.iinfo(np.int32).max)
        fx = np.clip((xr + m[0] * x1) * w, -limit - 1, limit)
        fy = np.clip((yr + m[3] * x1) * w, -limit - 1, limit)
        ix = np.rint(fx).astype(np.int64)  # cvRound: to nearest, ties to even
        iy = np.rint(fy).astype(np.int64)
        cols = slice(x0, x0 + x1.shape[1])
        xy[:, cols, 0] = np.clip(ix >> _TAB_BITS, -32768, 32767)
        xy[:, cols, 1] = np.clip(iy >> _TAB_BITS, -32768, 32767)
        frac[:, cols] = (iy & (_TAB_SIZE - 1)) * _TAB_SIZE + (ix & (_TAB_SIZE - 1))
    return xy, frac


@dataclass
class _Plan:
    """How to warp images of one size: OpenCV's fixed-point maps (and, on demand, a numpy plan)."""

    image_size: tuple[int, int]
    tensor_size: tuple[int, int]
    xy: np.ndarray  # int16 (h, w, 2), for cv2.remap
    frac: np.ndarray  # uint16 (h, w)

    @functools.cached_property
    def numpy(self) -> _SeparablePlan | _GeneralPlan:
        return _numpy_plan(self.xy, self.frac, self.image_size, self.tensor_size)


@dataclass(frozen=True)
class _SeparablePlan:
    """Source rows/columns and 1/32 weights when x depends on the column only and y on the row only."""

    y0: np.ndarray
    y1: np.ndarray
    wy: np.ndarray  # (h, 1, 1) int32 weight of y1, in 1/32
    x0: np.ndarray
    x1: np.ndarray
    wx: np.ndarray  # (1, w, 1) int32 weight of x1, in 1/32
    rows_first: bool


@dataclass(frozen=True)
class _GeneralPlan:
    """Per-pixel source coordinates and weights (any matrix)."""

    y0: np.ndarray
    y1: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    wy: np.ndarray  # (h, w, 1)
    wx: np.ndarray


def _plan(image_size: tuple[int, int], tensor_size: tuple[int, int]) -> _Plan:
    xy, frac = warp_maps(perspective_matrix(image_size, tensor_size), tensor_size)
    return _Plan(image_size, tensor_size, xy, frac)


def _numpy_plan(
    xy: np.ndarray, frac: np.ndarray, image_size: tuple[int, int], tensor_size: tuple[int, int]
) -> _SeparablePlan | _GeneralPlan:
    width, height = image_size
    sx, sy = xy[..., 0].astype(np.intp), xy[..., 1].astype(np.intp)
    ax, ay = (frac & (_TAB_SIZE - 1)).astype(np.int32), (frac >> _TAB_BITS).astype(np.int32)
    # BORDER_REPLICATE: every coordinate of the 2x2 neighbourhood is clamped into the image.
    x0, x1 = np.clip(sx, 0, width - 1), np.clip(sx + 1, 0, width - 1)
    y0, y1 = np.clip(sy, 0, height - 1), np.clip(sy + 1, 0, height - 1)
    by_column = all(np.all(v == v[:1]) for v in (x0, x1, ax))
    by_row = all(np.all(v == v[:, :1]) for v in (y0, y1, ay))
    if by_column and by_row:
        tw, th = tensor_size
        return _SeparablePlan(
            y0=y0[:, 0].copy(),
            y1=y1[:, 0].copy(),
            wy=ay[:, 0].reshape(-1, 1, 1).copy(),
            x0=x0[0].copy(),
            x1=x1[0].copy(),
            wx=ax[0].reshape(1, -1, 1).copy(),
            rows_first=th * width <= height * tw,
        )
    return _GeneralPlan(y0, y1, x0, x1, ay[..., None], ax[..., None])


def _warp_numpy(image: np.ndarray, plan: _SeparablePlan | _GeneralPlan) -> np.ndarray:
    """The warped image as int32 0..255: ``(sum of w_y * w_x * pixel + 2**9) >> 10``, weights in 1/32."""
    if isinstance(plan, _GeneralPlan):
        img = image.astype(np.int32)
        top = img[plan.y0, plan.x0] * (_TAB_SIZE - plan.wx) + img[plan.y0, plan.x1] * plan.wx
        bottom = img[plan.y1, plan.x0] * (_TAB_SIZE - plan.wx) + img[plan.y1, plan.x1] * plan.wx
        acc = top * (_TAB_SIZE - plan.wy) + bottom * plan.wy
    elif plan.rows_first:
        rows = image[plan.y0].astype(np.int32) * (_TAB_SIZE - plan.wy)
        rows += image[plan.y1].astype(np.int32) * plan.wy
        acc = rows[:, plan.x0] * (_TAB_SIZE - plan.wx)
        acc += rows[:, plan.x1] * plan.wx
    else:
        cols = image[:, plan.x0].astype(np.int32) * (_TAB_SIZE - plan.wx)
        cols += image[:, plan.x1].astype(np.int32) * plan.wx
        acc = cols[plan.y0] * (_TAB_SIZE - plan.wy)
        acc += cols[plan.y1] * plan.wy
    acc += 1 << (_WEIGHT_SHIFT - 1)
    acc >>= _WEIGHT_SHIFT
    return acc


@functools.cache
def _opencv_remap() -> Callable[..., np.ndarray] | None:
    """``cv2.remap`` when OpenCV is importable and agrees with :func:`_warp_numpy`, else None.

    ``cv2.remap`` with fixed-point maps runs the same integer arithmetic ~10x faster. It is checked
    once per process on a probe (down- and up-scaling, replicated borders) against the numpy path.
    """
    try:
        import cv2
    except ImportError:
        return None
    probe = np.random.default_rng(0).integers(0, 256, (23, 37, 3), dtype=np.uint8)
    for size in ((16, 9), (61, 40)):
        plan = _plan((37, 23), size)
        got = cv2.remap(probe, plan.xy, plan.frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if not np.array_equal(got, _warp_numpy(probe, plan.numpy)):
            log.warning(
                "gpu_seg: cv2.remap %s disagrees with the reference warp; using numpy", cv2.__version__
            )
            return None
    return cv2.remap


def _warp(image: np.ndarray, plan: _Plan) -> np.ndarray:
    """The warped ``(h, w, 3)`` image (uint8, or int32 holding 0..255 on the numpy path)."""
    remap = _opencv_remap()
    if remap is None:
        return _warp_numpy(image[..., :3], plan.numpy)
    import cv2

    warped = remap(
        np.ascontiguousarray(image), plan.xy, plan.frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return warped[..., :3]


def value_transform(normalization: Normalization) -> tuple[np.float32, np.float32]:
    """``(scale, offset)`` that MediaPipe applies to uint8 pixels (float32 arithmetic throughout).

    The tensor range is ``[(0 - mean) / std, (255 - mean) / std]``; ``GetValueRangeTransformation``
    maps ``[0, 255]`` onto it: ``scale = (max - min) / (255 - 0)``, ``offset = min - 0 * scale``.
    """
    f32 = np.float32
    mean, std = f32(normalization.mean[0]), f32(normalization.std[0])
    low = (f32(0) - mean) / std
    high = (f32(255) - mean) / std
    if not low < high:
        raise InputError("normalization", f"empty value range [{low}, {high}] (std must be positive)")
    scale = (high - low) / (f32(255) - f32(0))
    offset = low - f32(0) * scale
    return f32(scale), f32(offset)


class ImageToTensor:
    """Converts uint8 RGB(A) images of any size into a float32 model input tensor.

    Args:
        tensor_size: the model input's ``(width, height)``.
        normalization: the input's mean/std (one value, or three equal ones: MediaPipe rejects
            per-channel values).

    Warp plans are cached per image size (at most :data:`PLAN_CACHE_SIZE`). Thread-safe.
    """

    def __init__(self, tensor_size: tuple[int, int], normalization: Normalization) -> None:
        if not (
            isinstance(tensor_size, (tuple, list))
            and len(tensor_size) == 2
            and all(_is_int(v) and 1 <= v <= MAX_IMAGE_DIM for v in tensor_size)
        ):
            raise InputError(
                "tensor_size", f"expected (width, height), each 1..{MAX_IMAGE_DIM}, got {tensor_size!r}"
            )
        if not isinstance(normalization, Normalization):
            raise InputError("normalization", f"expected a Normalization, got {type(normalization).__name__}")
        if len(set(normalization.mean)) != 1 or len(set(normalization.std)) != 1:
            raise InputError(
                "normalization",
                f"per-channel normalization {normalization} is not available (MediaPipe rejects it too)",
            )
        self._scale, self._offset = value_transform(normalization)
        self.tensor_size = (int(tensor_size[0]), int(tensor_size[1]))
        self._plans: collections.OrderedDict[tuple[int, int], _Plan] = collections.OrderedDict()
        self._lock = threading.Lock()
        forks.renew_locks(self, "_lock")

    def _plan_for(self, image_size: tuple[int, int]) -> _Plan:
        with self._lock:
            plan = self._plans.get(image_size)
            if plan is not None:
                self._plans.move_to_end(image_size)
                return plan
        plan = _plan(image_size, self.tensor_size)
        with self._lock:
            self._plans[image_size] = plan
            while len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return plan

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The float32 ``(1, h, w, 3)`` tensor for a uint8 ``(H, W, 3 or 4)`` image.

        ``out``, when given, must be a C-contiguous, writeable float32 array of that shape (for
        example the interpreter's input buffer); it is filled and returned.

        Raises:
            InputError: ``"image"`` is not a uint8 ``(H, W, 3|4)`` array with sides in
                ``1..MAX_IMAGE_DIM``, or ``"out"`` is not such a tensor.
        """
        image = check_image(image, "image")
        tw, th = self.tensor_size
        if out is not None:
            _check_out(out, (1, th, tw, 3))
        height, width = image.shape[:2]
        warped = _warp(image, self._plan_for((width, height)))
        if out is None:
            out = np.empty((1, th, tw, 3), np.float32)
        # convertTo(CV_32F, scale, offset): a float32 product, then a float32 sum (two roundings).
        np.multiply(warped, self._scale, out=out[0], dtype=np.float32, casting="unsafe")
        if self._offset != 0:
            out += self._offset
        return out


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_out(out: object, shape: tuple[int, ...]) -> None:
    if not isinstance(out, np.ndarray):
        raise InputError("out", f"expected a numpy array, got {type(out).__name__}")
    if out.dtype != np.float32 or out.shape != shape:
        raise InputError("out", f"{out.dtype} {out.shape}; expected float32 {shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise InputError("out", "expected a C-contiguous, writeable array")
