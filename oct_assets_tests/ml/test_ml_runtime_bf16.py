"""cpu_bf16 on a CPU without bf16 instructions is emulated (17x slower than float32 on a Zen 2):
the trainer says so, read from the CPU's flags."""

from oct_assets.ml.config import cpu_has_bf16

ZEN2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_bf16_instructions_are_read_from_the_cpu_flags() -> None:
    assert cpu_has_bf16(ZEN2) is False
    assert cpu_has_bf16(SAPPHIRE) is True
    assert cpu_has_bf16("processor\t: 0\n") is None  # no flags line: unknown, no warning


def test_for_this_cpu_drops_cpu_bf16_only_without_bf16(monkeypatch) -> None:
    from oct_assets.ml import config as config_module
    from oct_assets.ml.config import TrainConfig

    asked = TrainConfig(cpu_bf16=True)
    for has, kept in ((False, False), (True, True), (None, True)):  # unknown: as asked
        monkeypatch.setattr(config_module, "cpu_has_bf16", lambda has=has: has)
        assert asked.for_this_cpu().cpu_bf16 is kept
        assert asked.for_this_cpu().to_dict() == {**asked.to_dict(), "cpu_bf16": kept}
    assert TrainConfig(cpu_bf16=False).for_this_cpu() == TrainConfig(cpu_bf16=False)
