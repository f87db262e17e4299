"""The in-process engine's dtype choice (float32 only where the CPU would emulate bf16) and its cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime.engine_vllm import cpu_binding, cpu_has_native_bf16, engine_dtype
from service.runtime.settings import EngineDtype


@pytest.mark.parametrize(
    ("requested", "on_cpu", "native_bf16", "expected"),
    [
        ("auto", True, False, "float32"),  # AVX2-only CPU: bf16 would be emulated
        ("auto", True, True, "auto"),  # AVX512-BF16 or AMX: the model's own dtype
        ("auto", False, False, "auto"),  # GPU: vLLM decides
        ("bfloat16", True, False, "bfloat16"),  # an explicit choice is never overridden
        ("float16", False, True, "float16"),
    ],
)
def test_engine_dtype(requested: EngineDtype, on_cpu: bool, native_bf16: bool, expected: str) -> None:
    assert engine_dtype(requested, on_cpu, native_bf16) == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx avx2 fma", False),
        ("fpu avx2 avx512f avx512_bf16", True),
        ("fpu avx2 avx512f amx_bf16 amx_tile", True),
    ],
)
def test_cpu_has_native_bf16_reads_the_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(cpuinfo) is expected


def test_cpu_without_cpuinfo_leaves_the_choice_to_vllm(tmp_path: Path) -> None:
    assert cpu_has_native_bf16(tmp_path / "absent") is True


def test_cpu_binding_takes_every_allowed_core_or_leaves_vllms_default() -> None:
    assert cpu_binding("all", {3, 1, 2}) == {
        "VLLM_CPU_OMP_THREADS_BIND": "1,2,3",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    assert cpu_binding("vllm", {0, 1}) == {}
