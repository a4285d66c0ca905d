"""Random distortions of uint8 digit batches: affine (rotation, scale, shear, shift) and elastic.

Every sample gets its own parameters, drawn uniformly within the configured bounds from the generator
passed in, and ONE sampling grid that composes the affine map with an elastic displacement field
(Simard, Steinkraus & Platt 2003: uniform noise in [-1, 1], smoothed by a Gaussian of sigma
``elastic_sigma``, scaled by ``elastic_alpha``; drawn directly in the smoothing's leading components,
see Augmenter.elastic_field). The grid is read with bilinear interpolation; pixels
that come from outside the image are background (0). uint8 in, uint8 out, vectorized over the batch.

Coordinates: x is the column, y the row, both in pixels, with the centre of a 28x28 image at 13.5.
The output pixel p shows the input at ``A^-1 (p - c - t) + c + d(p)``, where ``A = R(rotation) Sh(shear)
S(zoom)``, ``t`` the shift and ``d`` the elastic displacement: a positive shift moves the digit right/down,
a positive angle turns it clockwise on screen. The Gaussian smoothing is separable and written as two small
matrix products (``G_y @ field @ G_x^T``, mirror boundary), batched over all fields at once, and
truncated to the components the smoothing keeps.

Cost (benchmarks/augment_speed.py): ~0.4 s per 60,000 images for the affine part, ~0.5 s with elastic
distortions. Made in the training thread between steps, either makes a NumPy-engine epoch ~1.2-1.3x as long
(more than their own time: the training step after them finds colder caches). Where the engine leaves a core
idle, the trainer has them made ahead in a second process (data/prefetch.py: the same bits), and an epoch
with affine and elastic distortions costs about what a plain one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet5.blas import single_threaded_blas
from lenet5.config import AugmentConfig
from lenet5.workspace import Workspace


@dataclass
class AffineParams:
    """Per-sample parameters, each an array of shape (B,): degrees, zoom factor, degrees, pixels, pixels."""

    rotation: np.ndarray
    zoom: np.ndarray
    shear: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray

    @classmethod
    def identity(cls, n: int) -> AffineParams:
        return cls(np.zeros(n), np.ones(n), np.zeros(n), np.zeros(n), np.zeros(n))


def sample_affine(cfg: AugmentConfig, n: int, rng: np.random.Generator) -> AffineParams:
    """Draw n samples' parameters uniformly within the bounds of ``cfg``."""
    u = rng.uniform(-1.0, 1.0, size=(5, n))
    return AffineParams(
        rotation=cfg.rotation * u[0],
        zoom=1.0 + cfg.scale * u[1],
        shear=cfg.shear * u[2],
        shift_x=cfg.translate * u[3],
        shift_y=cfg.translate * u[4],
    )


def gaussian_matrix(n: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """(n, n) matrix G with ``G @ v`` = v smoothed by a Gaussian (mirror boundary, like scipy's 'reflect')."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    src = np.arange(n)[:, None] + offsets[None, :]  # (n, 2r+1) input index of each tap
    src = np.mod(src, 2 * n)
    src = np.where(src >= n, 2 * n - 1 - src, src)  # half-sample mirror: d c b a | a b c d | d c b a
    g = np.zeros((n, n))
    np.add.at(g, (np.repeat(np.arange(n), len(offsets)), src.ravel()), np.tile(weights, n))
    return g


class Augmenter:
    """``augmenter(uint8 (B, H, W), rng) -> uint8 (B, H, W)``: the transform handed to iterate_batches.

    Keeps scratch buffers between calls: use one instance per thread.
    """

    def __init__(self, cfg: AugmentConfig, size: tuple[int, int] = (28, 28)):
        self.cfg = cfg
        self.h, self.w = size
        # Pixel coordinates relative to the centre, flattened: (H*W,) x and y of every output pixel.
        yc, xc = np.meshgrid(np.arange(self.h) - (self.h - 1) / 2, np.arange(self.w) - (self.w - 1) / 2, indexing="ij")
        self.xc, self.yc = xc.ravel().astype(np.float32), yc.ravel().astype(np.float32)
        self.elastic = cfg.elastic_alpha > 0
        if self.elastic:
            self.basis_y = smoothing_basis(self.h, cfg.elastic_sigma)  # (H, ky)
            self.basis_x_t = smoothing_basis(self.w, cfg.elastic_sigma).T.copy()  # (kx, W)
        self.work = Workspace()

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        params = sample_affine(self.cfg, len(images), rng)
        src_y, src_x = self.affine_grid(params)
        if self.elastic:
            dy, dx = self.elastic_field(len(images), rng)
            src_y += dy
            src_x += dx
        return bilinear(images, src_y, src_x, self.work)

    def affine_grid(self, p: AffineParams) -> tuple[np.ndarray, np.ndarray]:
        """Source coordinates (B, H, W) y and x of every output pixel under the affine map alone.

        The arrays are workspace buffers, valid until the next call.
        """
        theta, phi = np.deg2rad(p.rotation), np.deg2rad(p.shear)
        cos, sin, tan, inv_zoom = np.cos(theta), np.sin(theta), np.tan(phi), 1.0 / p.zoom
        # A^-1 = S^-1 Sh^-1 R(-theta), with Sh = [[1, tan], [0, 1]] in (x, y).
        m00, m01 = inv_zoom * (cos + tan * sin), inv_zoom * (sin - tan * cos)
        m10, m11 = inv_zoom * -sin, inv_zoom * cos
        # src = M (p - c - t) + c, with the (B,) constants folded into one offset per sample and axis.
        off_x = (self.w - 1) / 2 - m00 * p.shift_x - m01 * p.shift_y
        off_y = (self.h - 1) / 2 - m10 * p.shift_x - m11 * p.shift_y
        coef = np.stack([m00, m01, off_x, m10, m11, off_y], axis=1).astype(np.float32)[:, :, None]  # (B, 6, 1)
        n = len(coef)
        src_x, src_y, tmp = (self.work(name, (n, self.h * self.w)) for name in ("src_x", "src_y", "grid_tmp"))
        for src, (a, b, c) in ((src_x, (0, 1, 2)), (src_y, (3, 4, 5))):
            np.multiply(coef[:, a], self.xc, out=src)
            src += np.multiply(coef[:, b], self.yc, out=tmp)
            src += coef[:, c]
        return src_y.reshape(n, self.h, self.w), src_x.reshape(n, self.h, self.w)

    def elastic_field(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed random displacements (dy, dx), each (B, H, W) float32 (Simard et al. 2003).

        Simard's field is ``alpha * G_y N G_x^T`` with N uniform noise in [-1, 1]; with G = U S V^T, that is
        ``alpha * (U_y S_y) (V_y^T N V_x) (U_x S_x)^T``, and the middle factor has the same covariance as N
        (V is orthogonal). So a small (ky, kx) block of fresh uniform noise in the smoothing's leading
        components gives the same covariance up to what the truncation drops (see smoothing_basis), with
        16x fewer random numbers (7x7 instead of 28x28 for sigma 4) and 4-16x smaller matrix products.
        """
        ky, kx = self.basis_y.shape[1], self.basis_x_t.shape[0]
        noise = self.work("noise", (2 * n, ky, kx))
        rng.random(out=noise, dtype=np.float32)
        noise *= np.float32(2 * self.cfg.elastic_alpha)  # alpha * uniform[-1, 1]
        noise -= np.float32(self.cfg.elastic_alpha)
        along_x = self.work("along_x", (2 * n * ky, self.w))
        smooth = self.work("smooth", (2 * n, self.h, self.w))
        with single_threaded_blas():  # tiny matrices: a second BLAS thread only costs (10x here)
            np.matmul(noise.reshape(-1, kx), self.basis_x_t, out=along_x)
            np.matmul(self.basis_y, along_x.reshape(2 * n, ky, self.w), out=smooth)
        return smooth[:n], smooth[n:]


def smoothing_basis(n: int, sigma: float, keep: float = 0.01) -> np.ndarray:
    """(n, k) float32 ``U_k S_k``: the leading components of gaussian_matrix(n, sigma), down to singular
    values of ``keep`` x the largest (k = 7 of 28 for sigma 4: the covariance
    of the smoothed field changes by 2e-5 of its largest entry)."""
    u, s, _ = np.linalg.svd(gaussian_matrix(n, sigma))
    k = int(np.sum(s >= keep * s[0]))
    return (u[:, :k] * s[:k]).astype(np.float32)


def bilinear(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray, work: Workspace | None = None) -> np.ndarray:
    """Sample uint8 images (B, H, W) at float32 coordinates (B, H, W), which it overwrites; outside is 0."""
    b, h, w = images.shape
    shape = images.shape
    work = work or Workspace()
    padded = work("padded", (b, h + 2, w + 2))  # a ring of background (0) around every image, never written
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(-1)
    np.clip(src_y, -1.0, h, out=src_y)  # anything further out reads the background ring
    np.clip(src_x, -1.0, w, out=src_x)
    y0 = np.minimum(np.floor(src_y, out=work("y0", shape)), h - 1, out=work("y0", shape))
    x0 = np.minimum(np.floor(src_x, out=work("x0", shape)), w - 1, out=work("x0", shape))
    fy = np.subtract(src_y, y0, out=src_y)  # in [0, 1]
    fx = np.subtract(src_x, x0, out=src_x)
    y0 *= w + 2  # flat index inside the padded image, exact in float32 (< 2**24)
    y0 += x0
    y0 += w + 3
    index = work("index", shape, np.intp)
    np.copyto(index, y0, casting="unsafe")
    index += np.arange(b, dtype=np.intp)[:, None, None] * ((h + 2) * (w + 2))  # which image
    v00, v01, v10, v11 = (work(name, shape) for name in ("v00", "v01", "v10", "v11"))
    np.take(flat, index, out=v00)
    index += 1
    np.take(flat, index, out=v01)
    index += w + 1
    np.take(flat, index, out=v10)
    index += 1
    np.take(flat, index, out=v11)
    v01 -= v00  # top = v00 + fx (v01 - v00), bottom likewise, out = top + fy (bottom - top)
    v01 *= fx
    v00 += v01
    v11 -= v10
    v11 *= fx
    v10 += v11
    v10 -= v00
    v10 *= fy
    v00 += v10
    v00 += 0.5  # round half up; the values are a convex mix of 0..255
    return v00.astype(np.uint8)


def make_augmenter(cfg: AugmentConfig):
    """A ``transform(uint8 batch (B,28,28), rng) -> uint8 batch`` for iterate_batches, or None when off."""
    if not cfg.enabled:
        return None
    return Augmenter(cfg)


def preview_grid(images: np.ndarray, transform, rng: np.random.Generator, copies: int = 8, gap: int = 2) -> np.ndarray:
    """A uint8 mosaic: one row per image, the original first, then ``copies`` distortions of it.

    The original column is set apart by a wider gap; gaps are mid-grey so the black backgrounds show.
    """
    n, h, w = images.shape
    tiles = transform(np.repeat(images, copies, axis=0), rng).reshape(n, copies, h, w)
    tiles = np.concatenate([images[:, None], tiles], axis=1)  # (n, 1 + copies, h, w)
    cols = 1 + copies
    tiles = np.pad(tiles, ((0, 0), (0, 0), (gap, 0), (gap, 0)), constant_values=128)  # grey gap above/left
    mosaic = tiles.transpose(0, 2, 1, 3).reshape(n * (h + gap), cols * (w + gap))
    mosaic = np.insert(mosaic, [w + gap] * (2 * gap), 128, axis=1)  # a wider gap after the originals
    return np.pad(mosaic, ((0, gap), (0, gap)), constant_values=128)


def write_preview(
    images: np.ndarray, labels: np.ndarray, cfg: AugmentConfig, path: Path, copies: int = 8, zoom: int = 4
) -> Path:
    """A PNG grid: the first digit of each class in images (N, 28, 28) (left column), then ``copies``
    distortions of it under the settings ``cfg`` (seeded: the same picture every time)."""
    from PIL import Image

    from lenet5.atomic import atomic_path

    first = [np.flatnonzero(labels == c)[:1] for c in range(10)]
    grid = preview_grid(images[np.concatenate(first)], Augmenter(cfg), np.random.default_rng(0), copies=copies)
    picture = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)
