"""3x3 convolution (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3).

The same map as conv2d_forward(x, w, stride=1, padding=1), with 2.25x fewer multiplications in
its GEMMs (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Each
output tile of 2x2 pixels comes from a 4x4 input tile d (rows 2i-1 .. 2i+2 of the padded
input, columns likewise) and the 3x3 filter g as

    Y = A^T [ (G g G^T) * (B^T d B) ] A      (* elementwise on 4x4; Y is 2x2)

    B^T = [[1, 0,-1, 0],     G = [[1,   0,   0 ],     A^T = [[1, 1, 1, 0],
           [0, 1, 1, 0],          [1/2, 1/2, 1/2],            [0, 1,-1,-1]]
           [0,-1, 1, 0],          [1/2,-1/2, 1/2],
           [0, 1, 0,-1]]          [0,   0,   1 ]]

Over channels the elementwise product becomes 16 GEMMs, one per position k = 4r + s of the
4x4 tile: M[k] = U[k] @ V[k] with U = G w G^T (16, C_out, C_in), V = B^T d B and M stored
tile-major, v: (P, 16, C_in) and m: (P, 16, C_out), so that a tile's 16 x C values are
contiguous for the transforms (vectorised over channels) while each GEMM reads a strided view
(BLAS's leading dimension; no copies). P = N * tH * tW, tile p = (n*tH + i)*tW + j,
tH = ceil(H/2), tW = ceil(W/2) (odd sizes: the last tile row/column is computed and cropped).
U is computed and grad_w finished in float64, then rounded once to w's dtype.

The backward is the exact adjoint of this computation (not a second convolution): with
dM = A dY A^T per tile (the output transform's adjoint),

    grad_w = G^T dU G  with  dU[k] = dM[k] @ V[k]^T              (16 GEMMs, C_out x C_in)
    grad_x = sum over tiles of B dV B^T,  dV[k] = U[k]^T @ dM[k]  (16 GEMMs, C_in x P)

In exact arithmetic all three equal conv2d_forward / conv2d_backward; in floating point the
rounding differs (the transforms add and subtract neighbouring pixels; tests: float64 to 1e-12
of the im2col path relative to the largest value, float32 to 1e-5). The parallel kernels
take one image (or one output channel of the filters) per iteration, run their inner loops
over the channels (contiguous in the tile-major layouts: streamed, vectorised) and write
disjoint slices in a fixed order, so the results do not depend on the thread count.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_same_dtype
from .conv import Conv2dGrads, conv2d_forward

# Where the automatic choice (conv2d_relu_forward(method="auto"), conv2d_forward_auto, and so
# the ANN and the SNN's dense convs) takes this path, measured per layer (forward +
# backward, float32, batch 32, 2 threads; docs/performance.md): at least 128 input and 128
# output channels on even maps of 4x4 or more (vgg9 at width 1: conv3-conv6, 0.6-0.9x the
# im2col time; 256 channels at 16x16 0.57x, 128 at 32x32 0.67x). Odd maps compute whole
# tiles past the edge (3x3: 1.8x slower, 5x5: 1.13x), 2x2 maps are one tile of mostly
# padding (1.6x), and with 64 channels the transforms eat the gain (0.84-1.34x). A shape
# rule, not a timing: the same shapes always take the same path, so results are reproducible
# and do not depend on the batch size.
MIN_CHANNELS = 128
MIN_SIZE = 4


class WinogradOut(NamedTuple):
    y: np.ndarray  # conv2d(x, w) (or its ReLU), (N, C_out, H, W)
    v: np.ndarray  # the transformed input B^T d B, (P, 16, C_in): what the backward needs of x
    u: np.ndarray  # the transformed filters G w G^T, (16, C_out, C_in), for the backward


def winograd_applies(x_shape, w_shape, stride, padding) -> bool:
    """True where the automatic choice takes the Winograd path: 3x3 filters, stride 1,
    padding 1, at least MIN_CHANNELS input and output channels, H and W even and at least
    MIN_SIZE."""
    return (len(x_shape) == 4 and len(w_shape) == 4 and tuple(w_shape[2:]) == (3, 3)
            and stride == 1 and padding == 1 and min(w_shape[:2]) >= MIN_CHANNELS
            and min(x_shape[2:]) >= MIN_SIZE and x_shape[2] % 2 == 0 and x_shape[3] % 2 == 0)


def conv2d_forward_auto(x: np.ndarray, w: np.ndarray, *, stride: int = 1,
                        padding: int = 0) -> np.ndarray:
    """conv2d_forward(x, w, stride, padding), by Winograd where winograd_applies (a shape
    rule), else by im2col (ops.conv). The SNN's dense convs use it everywhere (training
    forward, inference, conversion), so a layer's current is the same numbers on every path."""
    if winograd_applies(x.shape, w.shape, stride, padding):
        return winograd_conv_forward(x, w).y
    return conv2d_forward(x, w, stride=stride, padding=padding)


def _tiles(h: int, w: int):
    return (h + 1) // 2, (w + 1) // 2


def _check(fn, x_shape, w):
    check_array(fn, "w", w, ndim=4, dims="(C_out, C_in, 3, 3)")
    if w.shape[2:] != (3, 3):
        raise ValueError(f"{fn}: w.shape={w.shape}, expected 3x3 filters (C_out, C_in, 3, 3)")
    if len(x_shape) != 4 or x_shape[1] != w.shape[1]:
        raise ValueError(f"{fn}: x.shape={tuple(x_shape)}, expected (N, {w.shape[1]}, H, W) "
                         f"(C_in of w.shape={w.shape})")


def winograd_conv_forward(x: np.ndarray, w: np.ndarray, *, relu: bool = False) -> WinogradOut:
    """y = conv2d(x, w, stride=1, padding=1) (relu=True: y = 0 where that is <= 0) by F(2x2,3x3).

    x: (N, C_in, H, W), w: (C_out, C_in, 3, 3), same float dtype -> y: (N, C_out, H, W) and
    v = B^T d B: (P, 16, C_in) for winograd_conv_backward. Any C_in and H, W >= 1 work
    (winograd_applies is only the automatic choice's rule).
    """
    fn = "winograd_conv_forward"
    check_array(fn, "x", x, ndim=4, dims="(N, C_in, H, W)")
    _check(fn, x.shape, w)
    check_same_dtype(fn, x=x, w=w)
    n, c_in, h, wd = x.shape
    c_out = w.shape[0]
    th, tw = _tiles(h, wd)
    v = np.empty((n * th * tw, 16, c_in), dtype=x.dtype)
    _input_transform_kernel(np.ascontiguousarray(x), th, tw, v)
    m = np.empty((n * th * tw, 16, c_out), dtype=x.dtype)
    u = winograd_filter(w)
    # M[k]^T = V[k]^T U[k]^T: 16 GEMMs (P, C_in) @ (C_in, C_out), strided views, no copies
    np.matmul(v.transpose(1, 0, 2), u.transpose(0, 2, 1), out=m.transpose(1, 0, 2))
    y = np.empty((n, c_out, h, wd), dtype=x.dtype)
    _output_transform_kernel(m, th, tw, relu, y)
    return WinogradOut(y, v, u)


def winograd_conv_backward(grad_y: np.ndarray, v: np.ndarray, w: np.ndarray, x_shape: tuple, *,
                           need_x: bool = True, y_relu: np.ndarray | None = None,
                           pass_units: np.ndarray | None = None, u: np.ndarray | None = None,
                           overwrite_v: bool = False):
    """VJP of winograd_conv_forward (the exact adjoint of its computation, see module docstring).

    grad_y: (N, C_out, H, W); v: the forward's transformed input; x_shape: the forward input's
    shape. y_relu: the forward's ReLU output when relu=True: grad_y counts only where
    y_relu > 0, except on the channels where pass_units (bool, (C_out,)) is True. u: the
    forward's transformed filters (recomputed from w if None; the same numbers). Returns
    Conv2dGrads(x=grad_x or None, w=grad_w). overwrite_v=True lets dV overwrite v (the
    caller must not use it again); the numbers are the same either way.
    """
    fn = "winograd_conv_backward"
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C_out, H, W)")
    _check(fn, x_shape, w)
    check_same_dtype(fn, grad_y=grad_y, w=w)
    if not isinstance(need_x, (bool, np.bool_)):
        raise TypeError(f"{fn}: need_x must be a bool, got {type(need_x).__name__} {need_x!r}")
    n, c_in, h, wd = x_shape
    c_out = w.shape[0]
    th, tw = _tiles(h, wd)
    if grad_y.shape != (n, c_out, h, wd):
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected {(n, c_out, h, wd)}")
    if not isinstance(v, np.ndarray) or v.shape != (n * th * tw, 16, c_in) \
            or v.dtype != grad_y.dtype:
        raise ValueError(f"{fn}: v must be the forward's {grad_y.dtype} transformed input of "
                         f"shape {(n * th * tw, 16, c_in)}, got "
                         f"{getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}")
    if y_relu is not None and (not isinstance(y_relu, np.ndarray)
                               or y_relu.shape != grad_y.shape or y_relu.dtype != grad_y.dtype):
        raise ValueError(f"{fn}: y_relu must be the forward's {grad_y.dtype} output of shape "
                         f"{grad_y.shape}, got {getattr(y_relu, 'dtype', type(y_relu).__name__)} "
                         f"{getattr(y_relu, 'shape', '')}")
    if u is not None and (not isinstance(u, np.ndarray) or u.shape != (16, c_out, c_in)
                          or u.dtype != w.dtype):
        raise ValueError(f"{fn}: u must be the forward's {w.dtype} transformed filters of "
                         f"shape {(16, c_out, c_in)}, got "
                         f"{getattr(u, 'dtype', type(u).__name__)} {getattr(u, 'shape', '')}")
    gate = y_relu is not None
    y_ = y_relu if gate else grad_y
    units = (np.zeros(c_out, dtype=np.bool_) if pass_units is None
             else np.ascontiguousarray(pass_units, dtype=np.bool_))
    dm = np.empty((n * th * tw, 16, c_out), dtype=grad_y.dtype)
    _grad_output_transform_kernel(np.ascontiguousarray(grad_y), np.ascontiguousarray(y_), gate,
                                  units, th, tw, dm)
    # dU[k] = dM[k] V[k]^T: 16 GEMMs (C_out, P) @ (P, C_in)
    du = np.matmul(dm.transpose(1, 2, 0), v.transpose(1, 0, 2))
    grad_w = np.empty_like(w)
    _filter_transform_adjoint_kernel(du, grad_w)
    grad_x = None
    if need_x:  # dV[k]^T = dM[k]^T U[k]: 16 GEMMs (P, C_out) @ (C_out, C_in)
        dv = v if overwrite_v else np.empty_like(v)
        u = winograd_filter(w) if u is None else u
        np.matmul(dm.transpose(1, 0, 2), u, out=dv.transpose(1, 0, 2))
        grad_x = np.empty(x_shape, dtype=grad_y.dtype)
        _input_transform_adjoint_kernel(dv, th, tw, grad_x)
    return Conv2dGrads(x=grad_x, w=grad_w)


def winograd_filter(w: np.ndarray) -> np.ndarray:
    """U = G g G^T for every (C_out, C_in) filter g: (C_out, C_in, 3, 3) -> (16, C_out, C_in)."""
    u = np.empty((16,) + w.shape[:2], dtype=w.dtype)
    _filter_transform_kernel(np.ascontiguousarray(w), u)
    return u


# ----------------------------------------------------------------------------------- kernels
# The 1-D pieces, each on one row or column of a tile (fixed operation order):
#   _bt: a -> B^T a (4 -> 4)   _b: a -> B a (4 -> 4)   _g: g -> G g (3 -> 4)
#   _gt: a -> G^T a (4 -> 3)   _att: m -> A^T m (4 -> 2)   _a: y -> A y (2 -> 4)
@numba.njit(cache=True, inline="always")
def _bt(a0, a1, a2, a3):
    return a0 - a2, a1 + a2, a2 - a1, a1 - a3


@numba.njit(cache=True, inline="always")
def _b(a0, a1, a2, a3):
    return a0, a1 - a2 + a3, a1 + a2 - a0, -a3


@numba.njit(cache=True, inline="always")
def _g(g0, g1, g2):
    return g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2


@numba.njit(cache=True, inline="always")
def _gt(a0, a1, a2, a3):
    return a0 + 0.5 * (a1 + a2), 0.5 * (a1 - a2), 0.5 * (a1 + a2) + a3


@numba.njit(cache=True, inline="always")
def _att(m0, m1, m2, m3):
    return m0 + m1 + m2, m1 - m2 - m3


@numba.njit(cache=True, inline="always")
def _a(y0, y1):
    return y0, y0 + y1, y0 - y1, -y1


@numba.njit(cache=True, parallel=True)
def _input_transform_kernel(x, th, tw, v):
    # v[p, 4r + s, c] = (B^T d B)[r, s], d = x_pad[n, c, 2i-1 : 2i+3, 2j-1 : 2j+3], tile
    # p = (n*tH + i)*tW + j. One image per iteration (disjoint writes); inner loops run over
    # the channels, so every write of v is a contiguous run of C values.
    n_img, c_in, h, w = x.shape
    for n in numba.prange(n_img):
        d = np.zeros((4, 2 * tw + 2, c_in), dtype=x.dtype)  # 4 padded rows, channel-last
        zero = x.dtype.type(0)
        for i in range(th):
            for r in range(4):
                ii = 2 * i - 1 + r
                for c in range(c_in):
                    for k in range(w):
                        d[r, k + 1, c] = x[n, c, ii, k] if 0 <= ii < h else zero
            for k in range(2 * tw + 2):  # B^T d, down the columns
                for c in range(c_in):
                    d[0, k, c], d[1, k, c], d[2, k, c], d[3, k, c] = _bt(
                        d[0, k, c], d[1, k, c], d[2, k, c], d[3, k, c])
            for j in range(tw):  # (B^T d) B, along each tile's rows
                p = (n * th + i) * tw + j
                for r in range(4):
                    for c in range(c_in):
                        v[p, 4 * r, c], v[p, 4 * r + 1, c], v[p, 4 * r + 2, c], \
                            v[p, 4 * r + 3, c] = _bt(d[r, 2 * j, c], d[r, 2 * j + 1, c],
                                                     d[r, 2 * j + 2, c], d[r, 2 * j + 3, c])


@numba.njit(cache=True, parallel=True)
def _output_transform_kernel(m, th, tw, relu, y):
    # y[n, o, 2i + a, 2j + b] = (A^T M_p A)[a, b], M_p[r, s] = m[p, 4r + s, o], cropped at odd
    # edges, ReLU'd if relu (0 where <= 0, NaN passes). One image per iteration; each tile's
    # 16 x C_out values are read as contiguous runs.
    n_img, c_out, h, w = y.shape
    for n in numba.prange(n_img):
        out = np.empty((2, 2 * tw, c_out), dtype=y.dtype)  # one tile row of y, channel-last
        zero = y.dtype.type(0)
        for i in range(th):
            for j in range(tw):
                p = (n * th + i) * tw + j
                for o in range(c_out):
                    e0, f0 = _att(m[p, 0, o], m[p, 1, o], m[p, 2, o], m[p, 3, o])  # M A
                    e1, f1 = _att(m[p, 4, o], m[p, 5, o], m[p, 6, o], m[p, 7, o])
                    e2, f2 = _att(m[p, 8, o], m[p, 9, o], m[p, 10, o], m[p, 11, o])
                    e3, f3 = _att(m[p, 12, o], m[p, 13, o], m[p, 14, o], m[p, 15, o])
                    out[0, 2 * j, o], out[1, 2 * j, o] = _att(e0, e1, e2, e3)  # A^T (M A)
                    out[0, 2 * j + 1, o], out[1, 2 * j + 1, o] = _att(f0, f1, f2, f3)
            for a in range(min(2, h - 2 * i)):
                for o in range(c_out):
                    for k in range(w):
                        z = out[a, k, o]
                        y[n, o, 2 * i + a, k] = (zero if z <= 0 else z) if relu else z


@numba.njit(cache=True, parallel=True)
def _grad_output_transform_kernel(gy, y, gate, units, th, tw, dm):
    # dm[p, 4r + s, o] = (A dY A^T)[r, s], dY = the 2x2 block of grad_y at tile p (0 past odd
    # edges; if gate, 0 where y <= 0 except on channels with units[o]): the adjoint of
    # _output_transform_kernel. One image per iteration; dm written in contiguous runs.
    n_img, c_out, h, w = gy.shape
    for n in numba.prange(n_img):
        g = np.zeros((2, 2 * tw, c_out), dtype=gy.dtype)  # columns past w stay 0
        zero = gy.dtype.type(0)
        for i in range(th):
            for a in range(2):
                ii = 2 * i + a
                for o in range(c_out):
                    if ii >= h:
                        for k in range(w):
                            g[a, k, o] = zero
                    elif gate and not units[o]:  # as relu_backward: 0 where y <= 0
                        for k in range(w):  # both loads first: a select, not a branch
                            yk = y[n, o, ii, k]
                            gk = gy[n, o, ii, k]
                            g[a, k, o] = zero if yk <= 0 else gk
                    else:
                        for k in range(w):
                            g[a, k, o] = gy[n, o, ii, k]
            for j in range(tw):
                p = (n * th + i) * tw + j
                for o in range(c_out):
                    z0 = _a(g[0, 2 * j, o], g[1, 2 * j, o])  # A dY, by column
                    z1 = _a(g[0, 2 * j + 1, o], g[1, 2 * j + 1, o])
                    dm[p, 0, o], dm[p, 1, o], dm[p, 2, o], dm[p, 3, o] = _a(z0[0], z1[0])
                    dm[p, 4, o], dm[p, 5, o], dm[p, 6, o], dm[p, 7, o] = _a(z0[1], z1[1])
                    dm[p, 8, o], dm[p, 9, o], dm[p, 10, o], dm[p, 11, o] = _a(z0[2], z1[2])
                    dm[p, 12, o], dm[p, 13, o], dm[p, 14, o], dm[p, 15, o] = _a(z0[3], z1[3])


@numba.njit(cache=True, parallel=True)
def _input_transform_adjoint_kernel(dv, th, tw, grad_x):
    # grad_x[n, c] = sum over tiles p of B dV_p B^T placed at rows 2i-1 .. 2i+2, columns
    # 2j-1 .. 2j+2 (cropped), dV_p[r, s] = dv[p, 4r + s, c]: the adjoint of
    # _input_transform_kernel. One image per iteration (neighbouring tiles overlap, so an
    # image's tiles stay in one thread), tiles in a fixed order: the same sums at any thread
    # count.
    n_img, c_in, h, w = grad_x.shape
    for n in numba.prange(n_img):
        acc = np.zeros((2 * th + 2, 2 * tw + 2, c_in), dtype=grad_x.dtype)  # padded, C last
        z = np.empty((4, 4, c_in), dtype=grad_x.dtype)  # B dV of one tile
        for i in range(th):
            for j in range(tw):
                p = (n * th + i) * tw + j
                for s in range(4):  # B dV, down column s
                    for c in range(c_in):
                        z[0, s, c], z[1, s, c], z[2, s, c], z[3, s, c] = _b(
                            dv[p, s, c], dv[p, 4 + s, c], dv[p, 8 + s, c], dv[p, 12 + s, c])
                for r in range(4):  # (B dV) B^T, row r, added in place
                    for c in range(c_in):
                        x0, x1, x2, x3 = _b(z[r, 0, c], z[r, 1, c], z[r, 2, c], z[r, 3, c])
                        acc[2 * i + r, 2 * j, c] += x0
                        acc[2 * i + r, 2 * j + 1, c] += x1
                        acc[2 * i + r, 2 * j + 2, c] += x2
                        acc[2 * i + r, 2 * j + 3, c] += x3
        for c in range(c_in):
            for a in range(h):
                for k in range(w):
                    grad_x[n, c, a, k] = acc[a + 1, k + 1, c]


f8 = np.float64  # the filter transforms run in float64 (cheap; U, grad_w rounded once)


@numba.njit(cache=True, parallel=True)
def _filter_transform_kernel(w, u):
    # u[4r + s, o, c] = (G g G^T)[r, s], g = w[o, c]; one output channel per iteration
    c_out, c_in = w.shape[:2]
    for o in numba.prange(c_out):
        for c in range(c_in):
            k0 = _g(f8(w[o, c, 0, 0]), f8(w[o, c, 1, 0]), f8(w[o, c, 2, 0]))  # G g, by columns
            k1 = _g(f8(w[o, c, 0, 1]), f8(w[o, c, 1, 1]), f8(w[o, c, 2, 1]))
            k2 = _g(f8(w[o, c, 0, 2]), f8(w[o, c, 1, 2]), f8(w[o, c, 2, 2]))
            # rows: (G g) G^T (unrolled: constant tuple indices keep the loop over c vectorised)
            u[0, o, c], u[1, o, c], u[2, o, c], u[3, o, c] = _g(k0[0], k1[0], k2[0])
            u[4, o, c], u[5, o, c], u[6, o, c], u[7, o, c] = _g(k0[1], k1[1], k2[1])
            u[8, o, c], u[9, o, c], u[10, o, c], u[11, o, c] = _g(k0[2], k1[2], k2[2])
            u[12, o, c], u[13, o, c], u[14, o, c], u[15, o, c] = _g(k0[3], k1[3], k2[3])


@numba.njit(cache=True, parallel=True)
def _filter_transform_adjoint_kernel(du, grad_w):
    # grad_w[o, c] = G^T dU G, dU[r, s] = du[4r + s, o, c]: the adjoint of
    # _filter_transform_kernel; one output channel per iteration
    c_out, c_in = grad_w.shape[:2]
    for o in numba.prange(c_out):
        for c in range(c_in):
            # G^T dU, by column
            k0 = _gt(f8(du[0, o, c]), f8(du[4, o, c]), f8(du[8, o, c]), f8(du[12, o, c]))
            k1 = _gt(f8(du[1, o, c]), f8(du[5, o, c]), f8(du[9, o, c]), f8(du[13, o, c]))
            k2 = _gt(f8(du[2, o, c]), f8(du[6, o, c]), f8(du[10, o, c]), f8(du[14, o, c]))
            k3 = _gt(f8(du[3, o, c]), f8(du[7, o, c]), f8(du[11, o, c]), f8(du[15, o, c]))
            # rows: (G^T dU) G, unrolled
            grad_w[o, c, 0, 0], grad_w[o, c, 0, 1], grad_w[o, c, 0, 2] = _gt(k0[0], k1[0], k2[0],
                                                                             k3[0])
            grad_w[o, c, 1, 0], grad_w[o, c, 1, 1], grad_w[o, c, 1, 2] = _gt(k0[1], k1[1], k2[1],
                                                                             k3[1])
            grad_w[o, c, 2, 0], grad_w[o, c, 2, 1], grad_w[o, c, 2, 2] = _gt(k0[2], k1[2], k2[2],
                                                                             k3[2])
