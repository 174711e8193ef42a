"""Dense CRF post-processing of label-mask probabilities: the paper's "+CRF" numbers.

As the official `CLIP-ES/eval_cam_with_crf.py` does it, with the same binding (pydensecrf;
PyPI's maintained fork is `pydensecrf2`, imported as `pydensecrf`): the probabilities are
[background, tag maps] per pixel, the unary is their negative log (clipped at 1e-5, not
renormalised), the pairwise terms are a Gaussian kernel (sxy 1, weight 3) and a bilateral
kernel (sxy 67, srgb 3, weight 4), and mean-field inference runs 10 iterations.

The colour image the official script gives the bilateral kernel is not the photograph: it reads
BGR with OpenCV, subtracts the Caffe mean (104.008, 116.669, 122.675) and casts the float
result to uint8, so negative values wrap around (−1 becomes 255). That puts hard "edges" where a
channel crosses its mean and hides some real ones (black and white land within 3 levels of each
other). The paper's numbers were measured that way, so it is the default here
(`official_colour_wrap`); plain RGB is an option.

pydensecrf is imported only when a CRF is run, so everything else works without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import CAM_STORAGE_DTYPE
from .errors import CrfUnavailableError
from .segment import mask_values, with_background

CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)
UNARY_CLIP = 1e-5


@dataclass(frozen=True)
class CrfSettings:
    """The official CLIP-ES DenseCRF parameters."""

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_weight: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_weight: float = 4.0
    official_colour_wrap: bool = True  # feed the kernel the wrapped mean-subtracted image

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"CRF iterations must be at least 1, not {self.iterations}")


def require_crf() -> None:
    """Raise CrfUnavailableError, with what to install, unless the binding imports."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError as exc:
        raise CrfUnavailableError(
            "--crf needs the dense CRF binding: pip install pydensecrf2==1.1 (a C++ compiler "
            f"builds it), then rerun ({exc})") from None


def kernel_image(rgb: np.ndarray, official_colour_wrap: bool = True) -> np.ndarray:
    """The uint8 colour image (H, W, 3) the bilateral kernel compares.

    Official: BGR minus the Caffe mean, truncated toward zero and wrapped modulo 256 (what the
    official float→uint8 cast does on x86; spelled out here so it does not depend on the
    platform's undefined cast). Otherwise the RGB pixels themselves."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    if not official_colour_wrap:
        return np.array(rgb, order="C")  # a writable copy: the binding refuses read-only buffers
    bgr = rgb[:, :, ::-1].astype(np.float32) - np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray((np.trunc(bgr).astype(np.int64) % 256).astype(np.uint8))


def crf_probabilities(rgb: np.ndarray, probabilities: np.ndarray,
                      settings: CrfSettings = CrfSettings()) -> np.ndarray:
    """Mean-field marginals (C, H, W) of the dense CRF over `probabilities` (C, H, W) for the
    RGB uint8 image (H, W, 3). The unary −log(clip(p, 1e-5, 1)) is computed in the dtype of
    `probabilities`."""
    require_crf()
    import pydensecrf.densecrf as dcrf

    probabilities = np.asarray(probabilities)
    if not np.issubdtype(probabilities.dtype, np.floating):
        probabilities = probabilities.astype(np.float32)
    if probabilities.ndim != 3 or probabilities.shape[1:] != np.asarray(rgb).shape[:2]:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not cover the image "
                         f"of shape {np.asarray(rgb).shape[:2]}")
    channels, height, width = probabilities.shape
    # In the probabilities' own precision, as pydensecrf's unary_from_softmax (float16 there).
    unary = -np.log(np.clip(probabilities, UNARY_CLIP, 1.0)).reshape(channels, -1)
    crf = dcrf.DenseCRF2D(width, height, channels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=settings.gaussian_sxy, compat=settings.gaussian_weight)
    crf.addPairwiseBilateral(sxy=settings.bilateral_sxy, srgb=settings.bilateral_srgb,
                             rgbim=kernel_image(rgb, settings.official_colour_wrap),
                             compat=settings.bilateral_weight)
    return np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(channels, height, width)


def crf_refine(rgb: np.ndarray, probabilities: np.ndarray,
               settings: CrfSettings = CrfSettings()) -> np.ndarray:
    """Per-pixel index (H, W) into the first axis of `probabilities` (C, H, W) after the dense
    CRF: for label masks, channel 0 is background and channel t + 1 the t-th tag."""
    return np.argmax(crf_probabilities(rgb, probabilities, settings), axis=0)


def crf_label_mask(rgb: np.ndarray, cams: np.ndarray, class_indices: list[int],
                   background_power: float = 1.0, settings: CrfSettings = CrfSettings()) -> np.ndarray:
    """The "+CRF" label mask (H, W) uint16 from refined CAMs (tags, H, W) in [0, 1]: background
    score (1 − max CAM) ** background_power, the CRF over [background, CAMs], then 0 for
    background or the tag's class index + 1 (as the official eval_cam_with_crf.py).

    The official script reads the CAMs back from float16 files and builds the probabilities
    and the unary in float16, so that is done here too (it decides near-ties)."""
    scores = with_background(np.asarray(cams, dtype=CAM_STORAGE_DTYPE), background_power)
    return mask_values(crf_refine(rgb, scores, settings), class_indices)
