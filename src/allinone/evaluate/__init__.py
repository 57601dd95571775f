"""Quality benchmark: the evaluation protocols, classical baselines and the Markdown report.

Every protocol measures the model and its baselines on the same images in the same run. All
images are 8-bit; PSNR and SSIM are computed on uint8 RGB (or grey) arrays with `data_range=255`.

- denoise: CBSD68, top-left crop to a multiple of 16, Gaussian noise of sigma 15/25/50 added in
  uint8 space, rounded and clipped (`numpy.random.default_rng(index)` for the image at `index`);
  baselines: the noisy input, CBM3D with the true sigma (NL-means when `bm3d` is missing).
- derain: Rain100H (53 pairs here); baseline: the input.
- dehaze: SOTS-indoor (25 pairs here); baselines: the input, the dark channel prior.
- hazephotos: CBSD68 under atmospheric scattering with a depth map unlike the training one's
  (`add_scene_haze`: a vertical ramp plus the inverted, blurred luminance; beta in [0.8, 2] and a
  grey airlight in [0.8, 1], seeded by the image's index); baselines: the input, the dark channel
  prior.
- sr: Set5, Set14, Urban100 crops, x2 and x4. HR is cropped to a multiple of the scale, LR made
  with Pillow's antialiased bicubic, and the model restores LR upsampled back with Pillow's
  bicubic (the bicubic baseline). Also Y-channel PSNR with a `scale`-pixel border shaved.
- deblur: CBSD68 with a seeded camera-shake kernel (`motion_kernel`, length 15 px);
  baseline: Richardson-Lucy with the true kernel.
- lowlight: CBSD68 under `low_light` at severity 0.5 of the training sampler (its largest
  gamma, with photon noise), and CBSD68 3 stops under-exposed in linear light with no noise
  (`underexpose`), both restored as any other image (``scaling="auto"``, which undoes the
  darkening the exposure estimator reads in a colour photo, `allinone.infer.auto_exposure`);
  baseline: CLAHE.
- fmd: real confocal noise, FMD BPAE_B fields 2-6 (8-bit).
- fluorescence: procedural microscopy of the families and the detector depth held out of
  training (`allinone.microscopy`: mitochondria and tissue, 12-bit counts in uint16, photon
  budgets of 1 to 1,000 at the brightest pixel), `FLUORESCENCE_IMAGES` planes seeded apart from
  training's validation; PSNR and SSIM on the counts mapped from the clean plane's range to 0-255.
  Microscopy baselines of both (`allinone.microscopy_baselines`): the input; TV and BM3D with
  the noise estimated blind; TV and BM3D tuned per image against the truth (an oracle, marked);
  an untrained network of the default's size trained on the image alone (self-supervised) for
  `--adapt-seconds`; and after the model, the model adapted to the image for as long.
- composition: `Restorer.analyze` (flip-averaged, its default) on 256x256 CBSD68 crops with single
  degradations (each type at three severities) and with seeded mixtures of 2-3 types: top-1
  accuracy, ROC AUC per type, exact-set accuracy at probability 0.5.

This docstring is the protocols' description that the docs and the reports link to. The package:
`protocols` (the image protocols, `parse_tasks`, `evaluate`), `composition` (the composition
protocol), `context` (`Context`, `Sample`: scoring methods on samples), `synthesis` (the
degradations the protocols add), `baselines` (the classical baselines of the photo tasks),
`metrics`, `images` (reading and converting 8-bit images), `results` (the tables and the report),
`report` (the goals, provenance and Markdown) and `published` (other methods' published figures).
The composition test set's parameters are `allinone.degradations.composition_set`, shared with
training.
"""

from allinone.degradations.composition_set import (
    COMPOSITION_CROP,
    COMPOSITION_SEVERITIES,
    MIXTURES_PER_IMAGE,
    crop_centre,
)
from allinone.evaluate.baselines import (
    RL_ITERATIONS,
    clahe,
    classical_denoiser_name,
    dark_channel_prior,
    denoise_classical,
    richardson_lucy,
)
from allinone.evaluate.composition import THRESHOLD, confusion, run_composition
from allinone.evaluate.context import Context, Method, Sample
from allinone.evaluate.images import crop_multiple, read_grey, read_rgb, to_uint8
from allinone.evaluate.metrics import psnr, psnr_y, roc_auc, ssim
from allinone.evaluate.protocols import (
    FLUORESCENCE_SIZE,
    SR_SCALES,
    SR_SETS,
    TASKS,
    evaluate,
    fluorescence_samples,
    parse_tasks,
)
from allinone.evaluate.report import git_commit, goals, hardware, provenance, to_markdown
from allinone.evaluate.results import CompositionResult, Goal, Report, Row, TaskResult
from allinone.evaluate.synthesis import (
    BLUR_LENGTH,
    EXPOSURE_STOPS,
    LOW_LIGHT,
    SIGMAS,
    add_noise,
    add_scene_haze,
    bicubic_pair,
    darken,
    linear_to_srgb,
    motion_blur,
    srgb_to_linear,
    underexpose,
)

__all__ = [
    "BLUR_LENGTH",
    "COMPOSITION_CROP",
    "COMPOSITION_SEVERITIES",
    "EXPOSURE_STOPS",
    "FLUORESCENCE_SIZE",
    "LOW_LIGHT",
    "MIXTURES_PER_IMAGE",
    "RL_ITERATIONS",
    "SIGMAS",
    "SR_SCALES",
    "SR_SETS",
    "TASKS",
    "THRESHOLD",
    "CompositionResult",
    "Context",
    "Goal",
    "Method",
    "Report",
    "Row",
    "Sample",
    "TaskResult",
    "add_noise",
    "add_scene_haze",
    "bicubic_pair",
    "clahe",
    "classical_denoiser_name",
    "confusion",
    "crop_centre",
    "crop_multiple",
    "dark_channel_prior",
    "darken",
    "denoise_classical",
    "evaluate",
    "fluorescence_samples",
    "git_commit",
    "goals",
    "hardware",
    "linear_to_srgb",
    "motion_blur",
    "parse_tasks",
    "provenance",
    "psnr",
    "psnr_y",
    "read_grey",
    "read_rgb",
    "richardson_lucy",
    "roc_auc",
    "run_composition",
    "srgb_to_linear",
    "ssim",
    "to_markdown",
    "to_uint8",
    "underexpose",
]
