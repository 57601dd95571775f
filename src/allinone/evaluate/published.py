"""Published figures of other methods on the protocols' sets, shown beside ours (not measured)."""

from __future__ import annotations

from allinone.evaluate.results import Row


def _published(method: str, psnr_db: float, ssim_value: float | None, note: str) -> Row:
    return Row(method, psnr_db, ssim_value, 0, kind="published", note=note)


PUBLISHED_DENOISE: dict[int, list[Row]] = {
    sigma: [
        _published("CBM3D", cbm3d, None, "as reported by FFDNet (TIP 2018), 68 images"),
        _published("AirNet (CVPR 2022)", airnet, None, "all-in-one, 3 tasks; reported by PromptIR"),
        _published("PromptIR (NeurIPS 2023)", promptir, None, "all-in-one, 3 tasks"),
    ]
    for sigma, cbm3d, airnet, promptir in (
        (15, 33.52, 33.92, 33.98),
        (25, 30.71, 31.26, 31.31),
        (50, 27.38, 28.00, 28.06),
    )
}
PUBLISHED_DERAIN = [
    _published("Restormer (CVPR 2022)", 31.46, 0.904, "single-task; Y channel; 100 pairs"),
]
PUBLISHED_DEHAZE = [
    _published("DCP", 16.62, 0.818, "as reported by DehazeFormer (TIP 2023); 500 pairs"),
    _published("DehazeFormer-B (TIP 2023)", 37.84, 0.994, "single-task; 500 pairs"),
]
PUBLISHED_SR: dict[tuple[str, int], list[Row]] = {
    (name, scale): [
        _published("bicubic (MATLAB)", bicubic, bicubic_ssim, "Y channel, the SR convention"),
        _published("EDSR (CVPRW 2017)", edsr, edsr_ssim, "real LR input, Y channel"),
    ]
    for name, scale, bicubic, bicubic_ssim, edsr, edsr_ssim in (
        ("Set5", 2, 33.66, 0.9299, 38.11, 0.9602),
        ("Set5", 4, 28.42, 0.8104, 32.46, 0.8968),
        ("Set14", 2, 30.24, 0.8688, 33.92, 0.9195),
        ("Set14", 4, 26.00, 0.7027, 28.80, 0.7876),
    )
}
