"""The host a figure was measured on: its CPU model and the instruction sets that decide int8 and
bf16 speed (hosts of the same kind differ: an AVX2-only EPYC runs the same int8 graph at a
fraction of an AVX-512 VNNI one's speed). One reader of /proc/cpuinfo for the runtime's reports
and the benchmarks, so every CPU figure can name its instruction set."""

from __future__ import annotations

import functools
import os
import platform

# The flags that change which engine and precision pay off, in the order they are printed.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """(model name, the ISA_FLAGS present) from the text of /proc/cpuinfo (its first CPU)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, [f for f in ISA_FLAGS if f in flags]


@functools.cache
def _cpuinfo() -> tuple[str | None, list[str]]:
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:  # not Linux: the model from platform, flags unknown
        return None, []


def cpu_model() -> str:
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    """The ISA_FLAGS this CPU reports (empty where /proc/cpuinfo is not readable)."""
    return list(_cpuinfo()[1])


def machine_line() -> str:
    """One line for a report: cores, CPU model, instruction sets, OS."""
    flags = " ".join(isa_flags()) or "no AVX2 or newer reported"
    return f"{os.cpu_count()}-core {cpu_model()} ({flags}), {platform.system()}"
