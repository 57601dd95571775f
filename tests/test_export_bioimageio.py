"""The bioimage.io export: a package that bioimage.io's own test passes, in both weight formats."""

from __future__ import annotations

import zipfile

import pytest

from allinone import Restorer
from allinone.errors import InputError, OutputExistsError
from allinone.export_bioimageio import export_bioimageio

bioimageio_core = pytest.importorskip("bioimageio.core")

TILE = 64


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer.from_pretrained("tiny", device="cpu")


@pytest.fixture(scope="module")
def package(restorer, tmp_path_factory):
    return export_bioimageio(restorer, tmp_path_factory.mktemp("export") / "tiny.zip", tile=TILE)


def test_package_holds_both_formats_and_documentation(package):
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"rdf.yaml", "architecture.py", "weights.pt", "weights_torchscript.pt"} <= names
    assert {"test_input.npy", "test_output.npy"} <= names
    assert "What only the napari-allinone plugin adds" in readme
    assert f"{TILE} x {TILE}" in readme
    assert not [p for p in package.parent.iterdir() if p.name.endswith(".partial.zip")]


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_test_passes(package, weight_format):
    summary = bioimageio_core.test_model(package, weight_format=weight_format, devices=["cpu"])
    failed = [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.errors]
    assert summary.status == "passed", failed


def test_existing_output_is_kept(restorer, package):
    before = package.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        export_bioimageio(restorer, package, tile=TILE)
    assert package.read_bytes() == before


def test_tile_must_fit_the_network(restorer, tmp_path):
    with pytest.raises(InputError, match="multiple of 8"):
        export_bioimageio(restorer, tmp_path / "model.zip", tile=60)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_exports_the_shipped_model_and_bioimageio_test_passes(tmp_path, capsys):
    from allinone.cli import main

    output = tmp_path / "default.zip"
    assert main(["export", "--format", "bioimageio", "-o", str(output)]) == 0
    assert "wrote" in capsys.readouterr().err
    summary = bioimageio_core.test_model(output, devices=["cpu"])
    failed = [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.errors]
    assert summary.status == "passed", failed
    assert main(["export", "-o", str(output)]) == 2  # kept, with a message
    assert "already exists" in capsys.readouterr().err
