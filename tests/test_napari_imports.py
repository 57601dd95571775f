"""napari's start-up path (the plugin package and every module the manifest names) never
imports torch."""

from __future__ import annotations

import subprocess
import sys

import yaml

from napari_allinone import __file__ as package_file


def _manifest_modules() -> list[str]:
    from pathlib import Path

    manifest = yaml.safe_load((Path(package_file).parent / "napari.yaml").read_text())
    names = {cmd["python_name"].split(":")[0] for cmd in manifest["contributions"]["commands"]}
    return sorted(names)


def test_manifest_is_valid() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-allinone")
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Restore",
        "Degradation composition",
        "Fine-tune",
    }
    assert len(manifest.contributions.sample_data) == 6


def test_importing_the_plugin_does_not_import_torch() -> None:
    modules = ["napari_allinone", *_manifest_modules()]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
