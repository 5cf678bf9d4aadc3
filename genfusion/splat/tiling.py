"""Binning of projected Gaussians into 16x16 tiles and grouping of tiles into padded batches.

Vectorised, as gsplat's ``isect_tiles``: every (Gaussian, tile) pair its bounding box touches
becomes an intersection, ordered by camera, tile, then depth. The tiled rasterisers then
composite tiles in *groups* of similar depth complexity, padded to a common length K, so that one
group is a dense [G, K, P] block (P = 256 pixels) without much padding waste and with a memory
bound of ``max_elements`` per block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from genfusion.splat.projection import TILE_SIZE, tile_bounds

PIXELS_PER_TILE = TILE_SIZE * TILE_SIZE


@dataclass
class TileGroup:
    """A batch of G tiles composited together as one padded [G, K, P] block."""

    tile_ids: Tensor  # [G] global tile index (camera * tiles_per_image + row * tiles_x + col)
    gaussian_ids: Tensor  # [G, K] flat Gaussian index (camera * N + gaussian), depth-sorted
    valid: Tensor  # [G, K] bool, False on padding
    origin: Tensor  # [G, 2] float64 pixel coordinates (x, y) of each tile's top-left corner

    @property
    def n_slots(self) -> int:
        """K, the padded number of Gaussians per tile."""
        return self.gaussian_ids.shape[1]

    def slots(self, start: int, stop: int) -> TileGroup:
        """The same tiles with only the depth-ordered Gaussians ``start:stop``."""
        return TileGroup(
            tile_ids=self.tile_ids,
            gaussian_ids=self.gaussian_ids[:, start:stop],
            valid=self.valid[:, start:stop],
            origin=self.origin,
        )


@dataclass
class TileBins:
    """All intersections of one render, grouped for the rasteriser."""

    n_cameras: int  # C
    tiles_x: int  # tiles per image row
    tiles_y: int  # tiles per image column
    n_intersections: int  # number of (Gaussian, tile) pairs
    groups: list[TileGroup]  # padded batches covering every non-empty tile once

    @property
    def n_tiles(self) -> int:
        """Total number of tiles over all cameras."""
        return self.n_cameras * self.tiles_x * self.tiles_y


def bin_gaussians(
    means2d: Tensor,
    radii: Tensor,
    depths: Tensor,
    width: int,
    height: int,
    *,
    max_elements: int = 1 << 20,
    min_fill: float = 0.6,
) -> TileBins:
    """Intersect Gaussians with tiles and form padded tile groups.

    Args:
        means2d: [C, N, 2] projected centres. radii: [C, N, 2] int (0 = culled). depths: [C, N].
        max_elements: bound on G * K * P for one group (memory per temporary = 4 bytes each).
        min_fill: a group is closed when the next tile's length falls below this fraction of the
            group's K (limits padding waste).
    """
    n_cameras, n_gaussians = depths.shape
    device = depths.device
    tiles_x = math.ceil(width / TILE_SIZE)
    tiles_y = math.ceil(height / TILE_SIZE)
    per_image = tiles_x * tiles_y
    with torch.no_grad():
        lo, hi = tile_bounds(means2d, radii, width, height)
        span = hi - lo  # [C, N, 2]
        counts = span[..., 0] * span[..., 1]  # [C, N]
        order = torch.argsort(depths.detach(), dim=1, stable=True)  # front to back per camera
        flat_sorted = (order + torch.arange(n_cameras, device=device)[:, None] * n_gaussians).reshape(-1)
        counts_sorted = counts.reshape(-1)[flat_sorted]
        keep = counts_sorted > 0
        flat_sorted, counts_sorted = flat_sorted[keep], counts_sorted[keep]
        n_isect = int(counts_sorted.sum())
        gauss = torch.repeat_interleave(flat_sorted, counts_sorted)
        first = torch.cumsum(counts_sorted, 0) - counts_sorted
        local = torch.arange(n_isect, device=device) - torch.repeat_interleave(first, counts_sorted)
        lo_flat, span_flat = lo.reshape(-1, 2)[gauss], span.reshape(-1, 2)[gauss]
        tile_col = lo_flat[:, 0] + local % span_flat[:, 0]
        tile_row = lo_flat[:, 1] + local // span_flat[:, 0]
        camera = gauss // n_gaussians
        tile_id = camera * per_image + tile_row * tiles_x + tile_col
        tile_id, perm = torch.sort(tile_id, stable=True)
        flatten_ids = gauss[perm]
        n_tiles = n_cameras * per_image
        tile_counts = torch.bincount(tile_id, minlength=n_tiles)
        tile_starts = torch.cumsum(tile_counts, 0) - tile_counts
        groups = _make_groups(
            flatten_ids, tile_counts, tile_starts, tiles_x, per_image, max_elements, min_fill
        )
    return TileBins(
        n_cameras=n_cameras, tiles_x=tiles_x, tiles_y=tiles_y, n_intersections=n_isect, groups=groups
    )


def _make_groups(
    flatten_ids: Tensor,
    tile_counts: Tensor,
    tile_starts: Tensor,
    tiles_x: int,
    per_image: int,
    max_elements: int,
    min_fill: float,
) -> list[TileGroup]:
    device = flatten_ids.device
    nonempty = torch.nonzero(tile_counts > 0).squeeze(1)
    if nonempty.numel() == 0:
        return []
    by_length = nonempty[torch.argsort(tile_counts[nonempty], descending=True, stable=True)]
    lengths = tile_counts[by_length].tolist()
    bounds: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths):
            bounds.append((start, i))
            break
        k = lengths[start]
        too_big = (i - start + 1) * k * PIXELS_PER_TILE > max_elements
        if too_big or lengths[i] < min_fill * k:
            bounds.append((start, i))
            start = i
    groups = []
    for a, b in bounds:
        tiles = by_length[a:b]
        k = lengths[a]
        slot = torch.arange(k, device=device)
        valid = slot[None] < tile_counts[tiles][:, None]
        index = (tile_starts[tiles][:, None] + slot[None]).clamp(max=flatten_ids.numel() - 1)
        in_image = tiles % per_image
        origin = torch.stack([in_image % tiles_x, in_image // tiles_x], dim=1) * TILE_SIZE
        groups.append(
            TileGroup(tile_ids=tiles, gaussian_ids=flatten_ids[index], valid=valid, origin=origin.double())
        )
    return groups


T = TypeVar("T")


def scatter_group_gradients(
    results: Sequence[tuple[Tensor, Sequence[Tensor]]], accumulators: Sequence[Tensor]
) -> None:
    """Add per-fragment gradients of each tile group into per-Gaussian accumulators ([N, ...]).

    ``results`` holds, per group, its [G, K'] Gaussian ids and the gradients ([G, K', ...], in the
    order of ``accumulators``) of those fragments.
    """
    for gaussian_ids, grads in results:
        ids = gaussian_ids.reshape(-1)
        for accumulator, grad in zip(accumulators, grads, strict=True):
            accumulator.index_add_(0, ids, grad.reshape(-1, *accumulator.shape[1:]))


def map_groups(fn: Callable[..., T], *sequences: Sequence) -> list[T]:
    """``[fn(*items) for items in zip(*sequences)]``, spread over torch's CPU threads.

    Tile blocks are cache-sized, too small for torch's intra-op threading to pay off (each op's
    thread barrier costs more than the op, badly so on a shared machine). So blocks run side by
    side in a thread pool (torch releases the GIL) with intra-op threading off meanwhile.
    """
    items = list(zip(*sequences, strict=True))
    workers = torch.get_num_threads()
    on_cpu = not any(isinstance(x, torch.Tensor) and x.is_cuda for x in _first_tensors(items))
    if workers <= 1 or len(items) < 2 or not on_cpu:
        return [fn(*args) for args in items]
    grad_enabled = torch.is_grad_enabled()  # grad mode is thread-local: carry it to the workers

    def call(args: tuple) -> T:
        with torch.set_grad_enabled(grad_enabled):
            return fn(*args)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(call, items))
    finally:
        torch.set_num_threads(workers)


def _first_tensors(items: list[tuple]) -> list:
    if not items:
        return []
    first = items[0][0]
    return [getattr(first, "gaussian_ids", first)]


_MONOMIALS: dict[tuple, Tensor] = {}
_AXES: dict[torch.device, Tensor] = {}
TILE_CENTRE = TILE_SIZE / 2  # tile-local coordinate of the tile's centre


def tile_axis(device: torch.device) -> Tensor:
    """[TILE_SIZE] float64 tile-local pixel-centre coordinates 0.5, 1.5, ... along x or y."""
    if device not in _AXES:
        _AXES[device] = torch.arange(TILE_SIZE, device=device, dtype=torch.float64) + 0.5
    return _AXES[device]


def pixel_monomials(
    device: torch.device, dtype: torch.dtype = torch.float64, *, centred: bool = False
) -> Tensor:
    """[6, P] monomials (1, x, y, x^2, xy, y^2) of the tile's pixel centres, in tile-local
    coordinates (0.5 .. 15.5) or, ``centred``, relative to the tile centre (-7.5 .. 7.5: smaller
    terms, so less cancellation in sums built from them)."""
    key = (device, dtype, centred)
    if key not in _MONOMIALS:
        offsets = torch.arange(PIXELS_PER_TILE, device=device)
        shift = TILE_CENTRE if centred else 0.0
        x = (offsets % TILE_SIZE).double() + 0.5 - shift
        y = (offsets // TILE_SIZE).double() + 0.5 - shift
        _MONOMIALS[key] = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y]).to(dtype)
    return _MONOMIALS[key]


def tiles_to_image(
    tiles: Tensor, n_cameras: int, tiles_x: int, tiles_y: int, width: int, height: int
) -> Tensor:
    """[C * T, P, F] per-tile pixels to [C, H, W, F] images (cropping the partial border tiles)."""
    channels = tiles.shape[-1]
    grid = tiles.reshape(n_cameras, tiles_y, tiles_x, TILE_SIZE, TILE_SIZE, channels)
    image = grid.permute(0, 1, 3, 2, 4, 5).reshape(
        n_cameras, tiles_y * TILE_SIZE, tiles_x * TILE_SIZE, channels
    )
    return image[:, :height, :width]
