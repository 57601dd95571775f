"""Export a model as a bioimage.io model package (spec format 0.5): the network on one grey tile.

The package holds the weights twice, as a PyTorch state dict (with `GreyTileNet` as its
architecture) and as TorchScript, plus test tensors, citations and documentation. Needs the
optional `bioimageio.spec` package; `GreyTileNet` itself needs only torch.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from allinone.errors import InputError, OutputExistsError
from allinone.models import AllInOneNet, Preset, build_network

if TYPE_CHECKING:
    from bioimageio.spec.model.v0_5 import ModelDescr

    from allinone.infer.restorer import Restorer
    from allinone.weights import ModelCard

__all__ = ["GreyTileNet", "export_bioimageio"]

LICENSE = "BSD-3-Clause"
AUTHORS = "napari-allinone developers"
DESCRIPTION_LIMIT = 512
"""bioimage.io warns about longer descriptions: the full text goes into the documentation."""
PHOTONS = 20.0
"""Mean photon count of a white pixel in the test input's Poisson noise."""
CITATIONS = (
    (
        "Yao, M., Xu, R., Guan, Y., Huang, J., Xiong, Z.: Neural Degradation Representation "
        "Learning for All-In-One Image Restoration (NDR-Restore). IEEE Transactions on Image "
        "Processing, 2024.",
        "https://arxiv.org/abs/2310.12848",
    ),
    (
        "Tian, X., Liao, X., Liu, X., Li, M., Ren, C.: Degradation-Aware Feature Perturbation "
        "for All-in-One Image Restoration (DFPIR). CVPR 2025.",
        "https://arxiv.org/abs/2505.12630",
    ),
)
ARCHITECTURE_SOURCE = '''"""This package's architecture: AllInOneNet on one grey tile.

`GreyTileNet(**preset)` rebuilds the network from its preset, the weights entry's kwargs. It
needs the napari-allinone Python package (module `allinone`) installed.
"""

from allinone.export_bioimageio import GreyTileNet

__all__ = ["GreyTileNet"]
'''
DOCUMENTATION = """# {name}

{description}

## What this package runs

The network alone (`AllInOneNet`, preset `{preset}`, {parameters:,} parameters used at
inference) on one grey tile of {tile} x {tile} pixels: input shape (1, 1, {tile}, {tile}),
float32, intensities already scaled to [0, 1]. The grey channel is repeated to the network's
three colour channels and the restored channels are averaged back to one. The output has the
input's shape; it is not clipped, so it may stray slightly outside [0, 1].

Weights: a PyTorch state dict (architecture `GreyTileNet` in `{architecture}`, which needs the
napari-allinone Python package) and the same network traced to TorchScript for this tile size.

## What only the napari-allinone plugin adds

- tiling of images of any size and dimensionality, with overlapping, blended tiles;
- intensity scaling of any dtype by percentiles (0.1/99.9), and back to the source dtype;
- tone keeping: each tile's local mean stays on its input's unless haze, rain or low light is
  read there, and the result is never brighter than the input, locally;
- clipped-noise correction: the bias of noise clipped at an integer dtype's ends is undone;
- scene haze: haze judged and removed on an overview of each whole plane;
- composition analysis: which degradations an image holds, and where;
- self-supervised adaptation (fine-tuning) to the user's own images.

A bioimage.io consumer gets none of these: it must scale its input to [0, 1] and tile it
itself.

## Training

{training}

## Validation

The test input is a {tile}-pixel crop of scikit-image's `camera` image scaled to [0, 1] with
Poisson noise of {photons:g} photons at white (seed 0); the test output is this network's
restoration of it (8-bit PNG views of both are the sample tensors). Running the package
reproduces the test output from the test input with both weight formats (`bioimageio test`).
The restoration quality itself is measured by napari-allinone's benchmarks, not here.

## References

{references}
"""


class GreyTileNet(nn.Module):
    """`AllInOneNet` on grey tiles: (B, 1, H, W) in [0, 1] → the restored (B, 1, H, W)."""

    def __init__(self, **preset: Any) -> None:
        super().__init__()
        self.net = build_network(Preset.from_dict(preset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        restored = self.net(x.expand(-1, 3, -1, -1)).restored
        return restored.mean(dim=1, keepdim=True)


def export_bioimageio(
    restorer: Restorer, output: Path, *, tile: int = 256, overwrite: bool = False
) -> Path:
    """Write `restorer`'s network as a bioimage.io model zip at `output`; return its path.

    The zip is written to a temporary file beside `output` and renamed into place, so a
    failure leaves no partial package. Raises `OutputExistsError` where `output` exists and
    `overwrite` is false, `InputError` for a tile that is not a positive multiple of
    `AllInOneNet.multiple` or an output that cannot be written.
    """
    from bioimageio.spec import save_bioimageio_package

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; remove it or allow overwriting")
    if tile <= 0 or tile % AllInOneNet.multiple:
        raise InputError(f"tile must be a positive multiple of {AllInOneNet.multiple}, got {tile}")
    model = _grey_model(restorer.net)
    with tempfile.TemporaryDirectory(prefix="allinone-bioimageio-") as folder:
        descr = _describe(restorer, model, Path(folder), tile)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            partial = output.with_name(f".{output.name}.{secrets.token_hex(6)}.partial.zip")
            try:
                save_bioimageio_package(descr, output_path=partial)
                os.replace(partial, output)
            finally:
                partial.unlink(missing_ok=True)
        except OSError as error:
            raise InputError(f"Cannot write {output}: {error.strerror or error}.") from error
    return output


def _grey_model(net: AllInOneNet) -> GreyTileNet:
    """A CPU float32 `GreyTileNet` holding a copy of `net`'s weights."""
    model = GreyTileNet(**net.preset.to_dict())
    state = {key: value.detach().float().cpu() for key, value in net.state_dict().items()}
    model.net.load_state_dict(state)
    return model.eval()


def _test_input(tile: int) -> np.ndarray:
    """(1, 1, tile, tile) float32 in [0, 1]: a noisy crop of skimage's camera image."""
    from skimage import data

    camera = data.camera().astype(np.float32) / 255.0
    size = camera.shape[0]
    padded = np.pad(camera, (0, max(0, tile - size)), mode="symmetric")
    start = max(0, (size - tile) // 2)
    clean = padded[start : start + tile, start : start + tile]
    noisy = np.random.default_rng(0).poisson(clean * PHOTONS) / PHOTONS
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)[None, None]


def _write_png(path: Path, values: np.ndarray) -> None:
    """An 8-bit PNG of a (1, 1, h, w) tensor in [0, 1] (clipped), for people to look at."""
    from imageio.v3 import imwrite

    imwrite(path, np.rint(np.clip(values[0, 0], 0.0, 1.0) * 255).astype(np.uint8))


def _describe(restorer: Restorer, model: GreyTileNet, folder: Path, tile: int) -> ModelDescr:
    """The model description, its files written into `folder`."""
    from bioimageio.spec.model import v0_5 as bio

    card = restorer.card
    sample = _test_input(tile)
    example = torch.from_numpy(sample)
    with torch.no_grad():
        restored = model(example).numpy()
        with warnings.catch_warnings():
            # shapes read as constants: right for the one fixed tile size the package declares
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
    files = {
        name: folder / name
        for name in ("architecture.py", "weights.pt", "weights_torchscript.pt", "README.md")
    }
    files["architecture.py"].write_text(ARCHITECTURE_SOURCE, encoding="utf-8")
    torch.save(model.state_dict(), files["weights.pt"])
    traced.save(str(files["weights_torchscript.pt"]))
    np.save(folder / "test_input.npy", sample)
    np.save(folder / "test_output.npy", restored)
    for stem, values in (("input", sample), ("output", restored)):
        _write_png(folder / f"sample_{stem}.png", values)
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", f"napari-allinone {card.name}")
    used = tuple(f"{prefix}." for prefix in model.net.inference_modules())
    parameters = sum(p.numel() for key, p in model.net.named_parameters() if key.startswith(used))
    files["README.md"].write_text(
        _documentation(card, name, tile, parameters, "architecture.py"), encoding="utf-8"
    )
    torch_version = bio.Version(torch.__version__.split("+")[0])
    grey = bio.ChannelAxis(channel_names=[bio.Identifier("grey")])
    y, x = bio.AxisId("y"), bio.AxisId("x")
    input_id = bio.TensorId("input")
    return bio.ModelDescr(
        name=name,
        description=_short(card.description or f"napari-allinone model {card.name}"),
        authors=[bio.Author(name=AUTHORS)],
        cite=[bio.CiteEntry(text=text, url=bio.HttpUrl(url)) for text, url in CITATIONS],
        license=bio.LicenseId(LICENSE),
        documentation=bio.FileDescr(source=files["README.md"]),
        tags=["restoration", "denoising", "deblurring", "dehazing", "2d", "napari-allinone"],
        inputs=[
            bio.InputTensorDescr(
                id=input_id,
                description=f"one grey tile of {tile} pixels, intensities scaled to [0, 1]",
                axes=[
                    bio.BatchAxis(),
                    grey,
                    bio.SpaceInputAxis(id=y, size=tile),
                    bio.SpaceInputAxis(id=x, size=tile),
                ],
                test_tensor=bio.FileDescr(source=folder / "test_input.npy"),
                sample_tensor=bio.FileDescr(source=folder / "sample_input.png"),
                data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            )
        ],
        outputs=[
            bio.OutputTensorDescr(
                id=bio.TensorId("output"),
                description="the restored tile, about [0, 1] (not clipped)",
                axes=[
                    bio.BatchAxis(),
                    grey,
                    bio.SpaceOutputAxis(
                        id=y, size=bio.SizeReference(tensor_id=input_id, axis_id=y)
                    ),
                    bio.SpaceOutputAxis(
                        id=x, size=bio.SizeReference(tensor_id=input_id, axis_id=x)
                    ),
                ],
                test_tensor=bio.FileDescr(source=folder / "test_output.npy"),
                sample_tensor=bio.FileDescr(source=folder / "sample_output.png"),
                data=bio.IntervalOrRatioDataDescr(type="float32"),
            )
        ],
        weights=bio.WeightsDescr(
            pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                source=files["weights.pt"],
                architecture=bio.ArchitectureFromFileDescr(
                    source=files["architecture.py"],
                    callable=bio.Identifier("GreyTileNet"),
                    kwargs=model.net.preset.to_dict(),
                ),
                pytorch_version=torch_version,
            ),
            torchscript=bio.TorchscriptWeightsDescr(
                source=files["weights_torchscript.pt"],
                pytorch_version=torch_version,
                parent="pytorch_state_dict",
            ),
        ),
    )


def _short(text: str) -> str:
    """`text` cut at a word to bioimage.io's recommended description length."""
    if len(text) <= DESCRIPTION_LIMIT:
        return text
    suffix = " ... (full text in the documentation)"
    return text[: DESCRIPTION_LIMIT - len(suffix)].rsplit(" ", 1)[0] + suffix


def _documentation(
    card: ModelCard, name: str, tile: int, parameters: int, architecture: str
) -> str:
    """The package's README.md."""
    steps = card.training.get("steps")
    training = (
        f"{steps:,} training steps (see the description above)."
        if steps
        else "Untrained: random weights, for tests only."
    )
    return DOCUMENTATION.format(
        name=name,
        description=card.description or "(no description)",
        preset=card.preset.get("name", "custom"),
        parameters=parameters,
        tile=tile,
        architecture=architecture,
        training=training,
        photons=PHOTONS,
        references="\n".join(f"- {text} <{url}>" for text, url in CITATIONS),
    )
