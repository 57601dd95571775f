"""`allinone bench` on the CPU with the tiny preset."""

from __future__ import annotations

import torch

from allinone.bench import BF16_PEAK_TFLOPS, bf16_peak
from allinone.cli import main
from allinone.devices import cpu_has_bf16


def test_bench_prints_and_writes_a_table(tmp_path, capsys):
    output = tmp_path / "PERF.md"
    argv = ["bench", "--presets", "tiny", "--devices", "cpu", "--precisions", "fp32,bf16"]
    argv += ["--sizes", "64", "--stack", "2", "--repeats", "1", "--output", str(output)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == output.read_text().strip()
    rows = [line for line in printed.splitlines() if line.startswith("| tiny")]
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    assert [row.split(" | ")[3] for row in rows] == ["64²", "2×64²"] * len(precisions)
    assert [row.split(" | ")[2] for row in rows] == [p for p in precisions for _ in range(2)]
    for row in rows:
        cells = row.split(" | ")
        assert float(cells[5]) > 0 and float(cells[12]) > 0
    if not cpu_has_bf16():
        assert "tiny on cpu in bf16: this CPU has no native bf16" in printed


def test_bf16_peaks():
    assert bf16_peak(torch.device("cpu")) is None
    assert BF16_PEAK_TFLOPS["H100"] == BF16_PEAK_TFLOPS["H200"] == 989.0
