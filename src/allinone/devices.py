"""Choose the compute device and precision: cuda, then mps, then cpu."""

from __future__ import annotations

import torch

from allinone.errors import InputError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so that bf16 autocast
    is faster than float32 rather than emulated."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; `cuda:N`, `mps` and `cpu` are checked to exist."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as error:
        raise InputError(
            f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from error
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise InputError("CUDA was asked for but no CUDA device is available; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise InputError(f"{name} does not exist: this machine has {count} CUDA device(s)")
    elif resolved.type == "mps" and not _mps_available():
        raise InputError("Apple MPS was asked for but is not available on this machine")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for `precision` on `device`.

    CUDA: `auto` is bf16 where supported, else fp16. CPU: `auto` and `bf16` are bf16 on processors
    with native bf16 (AVX-512 BF16, AMX; ~1.5x faster, same restored pixels to ~0.01 dB), `bf16`
    is honoured elsewhere too (emulated, slow), fp16 runs in fp32. MPS: fp32.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return _DTYPES[precision]
    if device.type == "cpu" and (precision == "bf16" or (precision == "auto" and cpu_has_bf16())):
        return torch.bfloat16
    return torch.float32


def available_devices() -> list[tuple[str, str]]:
    """The devices present, as (id, label) pairs, `auto` first."""
    auto = resolve_device("auto")
    devices = [("auto", f"auto ({auto.type})"), ("cpu", "CPU")]
    for index in range(torch.cuda.device_count()):
        devices.append((f"cuda:{index}", f"cuda:{index} — {torch.cuda.get_device_name(index)}"))
    if _mps_available():
        devices.append(("mps", "Apple MPS"))
    return devices
