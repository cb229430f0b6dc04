"""The host description every CPU figure carries: model and the instruction sets that set int8 speed."""

from stream.host import ISA_FLAGS, machine_line, parse_cpuinfo

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni
processor\t: 1
model name\t: other
flags\t\t: fpu
"""


def test_parse_cpuinfo_reads_the_first_cpu_and_only_the_known_flags_in_order():
    model, flags = parse_cpuinfo(CPUINFO)
    assert model == "AMD EPYC 7B13"
    assert flags == ["avx2", "avx512f", "avx512_vnni"]  # ISA_FLAGS order, "avx"/"fma" not listed
    assert set(flags) <= set(ISA_FLAGS)


def test_an_avx2_only_host_is_told_apart_and_the_line_names_its_flags():
    assert parse_cpuinfo(CPUINFO.replace(" avx512f avx512_vnni", ""))[1] == ["avx2"]
    assert parse_cpuinfo("") == (None, [])
    line = machine_line()
    assert "-core " in line and line.count("(") == 1
