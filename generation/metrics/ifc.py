"""Inter-frame consistency (IFC) of a generated clip against its ground truth. No Django.

Seed 002 (Yaman et al. 2024, appendix D, eq. (G)), after the motion-constraint loss of Zhou et al. 2022
("Responsive listening head generation"):

    IFC = Σ_{t=2..T} || μ(β_t) − μ(β̂_t) ||₂,   μ(β_t) = β_t − β_{t−1},

β the ground-truth video and β̂ the generated one, the frame differences taken "in pixel space". It compares how each
video changes from one frame to the next: a generator whose frames flicker or jitter where the ground truth is
steady (or freezes where it moves) scores high; a generator that is wrong by the same amount in every frame does
not (a constant error cancels in the differences).

Faithful
--------
:func:`ifc_equation_g` is the equation as printed: the Euclidean norm over every pixel and channel of the change
difference, summed over t = 2..T, with the pixel values as given (0..255 for uint8 frames). Computed exactly: the
differences are integers, their squares are summed in int64, so it equals a hand computation of (G).

UNVERIFIED: the normalisation the platform reports (:func:`ifc`)
---------------------------------------------------------------
No code of the paper was found (metrics_models.md §6.5), and the printed equation cannot give its tables' values
(IFC 0.16-0.51 on LRS2/LRW/HDTF): with 0..255 pixels the literal sum grows with the frame size and the clip length
and is in the thousands for any real clip. The paper normalised, and did not say how. We report the value that is
independent of frame size, clip length and pixel scale:

    IFC_t = || μ(β_t) − μ(β̂_t) ||₂ / sqrt(n) with pixels scaled to [0, 1], n = H·W·3 values (the RMS of the
    change difference), and the clip value IFC = mean of IFC_t over t = 2..T.

So ``ifc = ifc_equation_g(gen / 255, ref / 255) / (sqrt(n) · (T − 1))``. The per-frame values (:class:`PerFrame`)
put IFC_t at frame t and NaN at frame 0 (no previous frame). Our values are on the scale of an RMS pixel error in
[0, 1] (about 0.01-0.1 for a clip that resembles its ground truth), below the paper's; they are not comparable with
its tables, only with each other. The paper's own scale may come from, e.g., frames in [-1, 1] or a sum over the
5-frame windows its models generate; nothing in the text decides it.

Region (UNVERIFIED choice): by default the face crop of :mod:`generation.metrics.regions` (the reference's face box
resized to 128 x 128, identical boxes for both clips). Lip-sync generators change only the face (they paste their
output back into the box), so on the whole frame the background's zero differences dilute the value by the face's
share of the frame, which varies from source to source; on the fixed-size face crop the value measures the face
and is comparable across sources (the models of seed 001 also generate, and are trained on, 96-px face crops).
:func:`ifc_full` gives the whole-frame variant.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from generation.metrics import regions
from generation.metrics.base import ClipPair, MetricUnavailable, PerFrame

CHUNK_VALUES = 2**24  # values per chunk of frames (int16: 32 MiB)


def change_difference_norms(generated: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> np.ndarray:
    """(T − 1,) float64: ||(β_t − β_{t−1}) − (β̂_t − β̂_{t−1})||₂ for t = 2..T (1-based, as in eq. (G)), the norm
    over every value of a frame, in the units of the inputs.

    generated, reference: (T, ...) arrays of one shape. Integer inputs are computed exactly (integer sums of
    squares), floating-point ones in float64.
    """
    g = torch.as_tensor(generated)
    r = torch.as_tensor(reference)
    if g.shape != r.shape:
        raise ValueError(f"generated {tuple(g.shape)} and reference {tuple(r.shape)} differ")
    if len(g) < 2:
        return np.zeros(0)
    if g.dtype == torch.uint8 and r.dtype == torch.uint8:
        dtype = torch.int16  # errors in ±255, changes in ±510: exact, and small
    elif g.is_floating_point() or r.is_floating_point():
        dtype = torch.float64
    else:
        dtype = torch.int64
    out = np.empty(len(g) - 1)
    step = max(1, CHUNK_VALUES // max(1, g[0].numel()))
    # Chunks overlap by one frame so that every consecutive pair is seen once.
    for start in range(0, len(g) - 1, step):
        stop = min(start + step + 1, len(g))
        error = r[start:stop].to(dtype) - g[start:stop].to(dtype)  # β − β̂, per frame
        change = (error[1:] - error[:-1]).flatten(1)  # μ(β_t) − μ(β̂_t)
        if dtype == torch.int16:
            change = change.to(torch.int32)
        squares = change.square().sum(dim=1)  # integer sums are exact (int64)
        out[start:stop - 1] = np.sqrt(squares.double().numpy())
    return out


def ifc_equation_g(generated: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Seed 002 eq. (G) literally: Σ_{t=2..T} ||μ(β_t) − μ(β̂_t)||₂ in the units of the inputs (0..255 for uint8
    frames); 0 for a clip of one frame."""
    return float(change_difference_norms(generated, reference).sum())


def ifc_per_frame(generated: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor,
                  data_range: float = 255.0) -> PerFrame:
    """The normalised IFC (module docstring): per frame t ≥ 1 the RMS of the change difference with pixels divided
    by ``data_range``, NaN at frame 0; the clip value is their mean. MetricUnavailable for fewer than 2 frames."""
    if len(generated) < 2:
        raise MetricUnavailable("IFC compares consecutive frames and the clip has fewer than 2")
    n_values = int(np.prod(generated.shape[1:]))
    norms = change_difference_norms(generated, reference) / (data_range * math.sqrt(n_values))
    frames = np.concatenate([[math.nan], norms])
    return PerFrame(float(norms.mean()), frames)


def ifc(pair: ClipPair, *, crop_size: int = regions.CROP_SIZE) -> PerFrame:
    """IFC on the face crop (default region; module docstring), normalised: mean RMS change difference in [0, 1]
    pixel units. Needs the reference and the face boxes (detected on the reference when the pair has none)."""
    reference = pair.require_reference("IFC")
    if pair.n_frames < 2:
        raise MetricUnavailable("IFC compares consecutive frames and the clip has fewer than 2")
    boxes = regions.boxes_of(pair)
    generated_crops = regions.crop_tensor(pair.generated, boxes, crop_size).to(torch.uint8)
    reference_crops = regions.crop_tensor(reference, boxes, crop_size).to(torch.uint8)
    return ifc_per_frame(generated_crops, reference_crops)


def ifc_full(pair: ClipPair) -> PerFrame:
    """IFC on the whole frame, normalised as :func:`ifc`."""
    reference = pair.require_reference("IFC")
    return ifc_per_frame(pair.generated, reference)
