"""The CPU kernels' compile target: full-width vectors on AVX-512 hosts unless the user
chose a target (gradflow.kernels.cpu._prefer_full_vectors), and whether the code it gives
has 512-bit vectors (_wide_vectors)."""
import pytest
from numba.core import config

from gradflow.kernels import cpu


class FakeFeatures(dict):
    def flatten(self):
        return ",".join(("+" if on else "-") + name for name, on in self.items())


@pytest.fixture
def fresh_config(monkeypatch):
    monkeypatch.delenv("NUMBA_CPU_NAME", raising=False)
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    return monkeypatch


@pytest.mark.parametrize("avx512, expected", [
    (True, "+avx2,+fma,+avx512f,-prefer-256-bit"),
    (False, None),                      # AVX2-only or other CPUs: LLVM's own choice
])
def test_host_features_without_the_256_bit_preference(fresh_config, avx512, expected):
    fresh_config.setattr("llvmlite.binding.get_host_cpu_features",
                         lambda: FakeFeatures(avx2=True, fma=True, avx512f=avx512))
    cpu._prefer_full_vectors()
    assert config.CPU_FEATURES == expected


@pytest.mark.parametrize("variable, value", [("NUMBA_CPU_NAME", "haswell"), ("NUMBA_CPU_FEATURES", ""),
                                             ("NUMBA_CPU_FEATURES", "+avx2")])
def test_a_target_chosen_by_the_user_is_left_alone(fresh_config, variable, value):
    fresh_config.setenv(variable, value)
    fresh_config.setattr("llvmlite.binding.get_host_cpu_features",
                         lambda: FakeFeatures(avx2=True, avx512f=True))
    cpu._prefer_full_vectors()
    assert config.CPU_FEATURES is None


@pytest.mark.parametrize("cpu_features, host_avx512, wide", [
    (None, True, True),                                   # Numba's default target: the host's features
    (None, False, False),
    ("+avx2,+fma,+avx512f,-prefer-256-bit", True, True),  # what _prefer_full_vectors sets
    ("+avx2,+fma,+avx512f,+prefer-256-bit", True, False),
    ("", True, False),                                    # NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= (AVX2 code)
    ("+neon", False, False),
])
def test_wide_vectors_follow_the_compile_target(fresh_config, cpu_features, host_avx512, wide):
    fresh_config.setattr(config, "CPU_FEATURES", cpu_features)
    fresh_config.setattr("llvmlite.binding.get_host_cpu_features",
                         lambda: FakeFeatures(avx2=True, fma=True, avx512f=host_avx512))
    assert cpu._wide_vectors() is wide
