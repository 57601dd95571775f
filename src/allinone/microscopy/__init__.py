"""Synthetic fluorescence microscopy: procedural specimens, optics and detectors.

`scenes` draws fluorophore densities of several specimen families, `optics` images them through
a microscope's point spread function with out-of-focus light, and `detector` turns the photons
into stored counts with shot, excess and read noise, gain, offset, quantisation and saturation.
Training draws its microscopy pairs from these (`allinone.train.fluorescence`); whole families
and detector depths are held out, so validation can report on specimens never trained on.
"""

from allinone.microscopy.detector import (
    HELD_OUT_BITS,
    TRAINING_BITS,
    Detector,
    acquire,
    draw_detector,
    expose,
    stack_detectors,
)
from allinone.microscopy.optics import Optics, draw_optics, image
from allinone.microscopy.scenes import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    TRAINING_FAMILIES,
    scene,
)

__all__ = [
    "FAMILIES",
    "HELD_OUT_BITS",
    "HELD_OUT_FAMILIES",
    "TRAINING_BITS",
    "TRAINING_FAMILIES",
    "Detector",
    "Optics",
    "acquire",
    "draw_detector",
    "draw_optics",
    "expose",
    "image",
    "scene",
    "stack_detectors",
]
