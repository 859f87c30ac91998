"""Independent slow references for the ops (STYLE 2.3: ``<op>_forward_naive``).

Written from the docstring equations, sharing no code with refsnn: plain loops (CS231n), an
einsum over an ``as_strided`` window view (JAX lax_reference ``_conv_view``), reshape-mean
pooling, and softmax cross-entropy in plain numpy. For tiny shapes only.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def _out_size(h, w, kh, kw, stride, padding):
    return (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1


def _pad(x, padding):
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


# --- conv ---------------------------------------------------------------------------------

def conv2d_forward_naive(x, w, *, stride, padding):
    """y[n, o, i, j] = sum_{c,p,q} w[o, c, p, q] * x_pad[n, c, i*s + p, j*s + q], six loops."""
    n_img, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = _out_size(h, wd, kh, kw, stride, padding)
    xp = _pad(x, padding)
    y = np.zeros((n_img, c_out, ho, wo), dtype=x.dtype)
    for n in range(n_img):
        for o in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0
                    for c in range(c_in):
                        for p in range(kh):
                            for q in range(kw):
                                acc += w[o, c, p, q] * xp[n, c, i * stride + p, j * stride + q]
                    y[n, o, i, j] = acc
    return y


def conv_windows(x, kh, kw, *, stride, padding):
    """View (N, C, H_out, W_out, kH, kW) with v[n, c, i, j, p, q] = x_pad[n, c, i*s+p, j*s+q]."""
    xp = np.ascontiguousarray(_pad(x, padding))
    n_img, c_in, hp, wp = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, shape=(n_img, c_in, ho, wo, kh, kw),
                      strides=(sn, sc, sh * stride, sw * stride, sh, sw), writeable=False)


def conv2d_forward_einsum(x, w, *, stride, padding):
    """The same sum as one einsum over the window view."""
    v = conv_windows(x, w.shape[2], w.shape[3], stride=stride, padding=padding)
    return np.einsum("ncijpq,ocpq->noij", v, w).astype(x.dtype)


def conv2d_backward_naive(grad_y, x, w, *, stride, padding):
    """(grad_x, grad_w) by loops, scattering straight into padded grad_x (no col2im).

    grad_w[o, c, p, q] += grad_y[n, o, i, j] * x_pad[n, c, i*s + p, j*s + q]
    grad_x_pad[n, c, i*s + p, j*s + q] += grad_y[n, o, i, j] * w[o, c, p, q]; crop the padding.
    """
    n_img, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    _, _, ho, wo = grad_y.shape
    xp = _pad(x, padding)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for n in range(n_img):
        for o in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    g = grad_y[n, o, i, j]
                    for c in range(c_in):
                        for p in range(kh):
                            for q in range(kw):
                                a, b = i * stride + p, j * stride + q
                                gw[o, c, p, q] += g * xp[n, c, a, b]
                                gxp[n, c, a, b] += g * w[o, c, p, q]
    gx = gxp[:, :, padding:padding + h, padding:padding + wd]
    return np.ascontiguousarray(gx), gw


def conv2d_backward_einsum(grad_y, x, w, *, stride, padding):
    """grad_w by einsum over the window view; grad_x by scattering the einsum'd patches."""
    kh, kw = w.shape[2], w.shape[3]
    v = conv_windows(x, kh, kw, stride=stride, padding=padding)
    gw = np.einsum("noij,ncijpq->ocpq", grad_y, v)
    patches = np.einsum("noij,ocpq->ncijpq", grad_y, w)  # d loss / d window entry
    n_img, c_in, h, wd = x.shape
    gxp = np.zeros((n_img, c_in, h + 2 * padding, wd + 2 * padding), dtype=x.dtype)
    ho, wo = grad_y.shape[2], grad_y.shape[3]
    for p in range(kh):
        for q in range(kw):
            gxp[:, :, p:p + stride * (ho - 1) + 1:stride,
                q:q + stride * (wo - 1) + 1:stride] += patches[..., p, q]
    return np.ascontiguousarray(gxp[:, :, padding:padding + h, padding:padding + wd]), gw


# --- linear -------------------------------------------------------------------------------

def linear_forward_naive(x, w):
    """y[n, o] = sum_i x[n, i] w[o, i], loops."""
    y = np.zeros((x.shape[0], w.shape[0]), dtype=x.dtype)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = sum(x[n, i] * w[o, i] for i in range(x.shape[1]))
    return y


def linear_backward_naive(grad_y, x, w):
    """(grad_x, grad_w) by einsum: grad_x[n,i] = sum_o g[n,o] w[o,i]; grad_w[o,i] = sum_n g x."""
    return np.einsum("no,oi->ni", grad_y, w), np.einsum("no,ni->oi", grad_y, x)


# --- pool ---------------------------------------------------------------------------------

def avg_pool2d_forward_naive(x, *, kernel, stride=None):
    """Mean over windows: reshape-mean when stride == kernel, else a mean over a window view."""
    stride = kernel if stride is None else stride
    n, c, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    if stride == kernel:  # crop the floor-mode remainder, split each axis into (out, window)
        xc = x[:, :, :ho * kernel, :wo * kernel]
        return xc.reshape(n, c, ho, kernel, wo, kernel).mean(axis=(3, 5))
    v = conv_windows(x, kernel, kernel, stride=stride, padding=0)
    return v.mean(axis=(4, 5))


def avg_pool2d_backward_naive(grad_y, x_shape, *, kernel, stride=None):
    """grad_x[n, c, i*s + p, j*s + q] += grad_y[n, c, i, j] / kernel^2, loops."""
    stride = kernel if stride is None else stride
    gx = np.zeros(x_shape, dtype=grad_y.dtype)
    n_img, c_in, ho, wo = grad_y.shape
    for n in range(n_img):
        for c in range(c_in):
            for i in range(ho):
                for j in range(wo):
                    gx[n, c, i * stride:i * stride + kernel,
                       j * stride:j * stride + kernel] += grad_y[n, c, i, j] / (kernel * kernel)
    return gx


# --- activations --------------------------------------------------------------------------

def relu_forward_naive(x):
    return np.where(x > 0, x, np.zeros_like(x))


def relu_backward_naive(grad_y, x):
    """d relu / dx = 1 for x > 0 and 0 for x <= 0 (torch's choice at 0)."""
    return np.where(x > 0, grad_y, np.zeros_like(grad_y))


# --- loss ---------------------------------------------------------------------------------

def softmax_naive(z):
    """Row-wise softmax, one row at a time, exp(z - max) / sum."""
    out = np.empty_like(z)
    for r in range(z.shape[0]):
        e = np.exp(z[r] - np.max(z[r]))
        out[r] = e / np.sum(e)
    return out


def cross_entropy_naive(logits, labels):
    """(1/N) sum_n [logsumexp(z_n) - z_n[y_n]] via -log softmax, as a Python float."""
    p = softmax_naive(logits.astype(np.float64))
    return float(np.mean([-np.log(p[n, labels[n]]) for n in range(len(labels))]))


def cross_entropy_backward_naive(grad_loss, logits, labels):
    """grad_loss * (softmax - onehot) / N."""
    p = softmax_naive(logits)
    onehot = np.zeros_like(logits)
    onehot[np.arange(len(labels)), labels] = 1
    return (grad_loss * (p - onehot) / logits.shape[0]).astype(logits.dtype)
