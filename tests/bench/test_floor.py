"""The read-floor kernel reads every word exactly once (CPU: Triton interpreter)."""

import numpy as np
import pytest
import torch

from infercore.bench.floor import ReadConfig, read_floor, read_out_size, read_words


def _xor_all(t: torch.Tensor) -> int:
    return int(np.bitwise_xor.reduce(t.cpu().numpy().ravel()))


@pytest.mark.parametrize("config", [ReadConfig(64, 1, None), ReadConfig(32, 1, 2),
                                    ReadConfig(128, 2, 3)])
@pytest.mark.parametrize("words", [1, 97, 1000])
def test_read_words_xors_every_word(device, config, words):
    src = torch.randint(-2**31, 2**31 - 1, (words,), dtype=torch.int32, device=device)
    out = torch.full((read_out_size(words, config, device) + 3,), 7, dtype=torch.int32,
                     device=device)
    got = read_words(src, out, config)
    assert got.numel() == read_out_size(words, config, device)
    assert _xor_all(got) == _xor_all(src)
    # a word read twice or skipped would change the xor
    src[words // 2] ^= 1 << 5
    assert _xor_all(read_words(src, config=config)) != _xor_all(got)


def test_read_floor_rotation_reads_its_buffers(device):
    rot, config = read_floor(1001, device, copies=2, configs=(ReadConfig(64, 1, 2),))
    assert config == ReadConfig(64, 1, 2)
    programs = read_out_size(251, config, device)  # 1001 bytes: 251 words
    for out in (rot(), rot()):
        assert out.dtype == torch.int32 and out.numel() == programs
    assert rot.outputs[0] is not rot.outputs[1]


@pytest.mark.parametrize(("call", "match"), [
    (lambda d: read_words(torch.zeros(8, dtype=torch.int64, device=d)), "src: expected"),
    (lambda d: read_words(torch.zeros(0, dtype=torch.int32, device=d)), "src: expected"),
    (lambda d: read_words(torch.zeros(8, dtype=torch.int32, device=d)[::2]), "strided"),
    (lambda d: read_words(torch.zeros(512, dtype=torch.int32, device=d),
                          torch.zeros(1, dtype=torch.int32, device=d),
                          ReadConfig(64, 1, None)), "out: expected int32 with at least 8"),
    (lambda d: read_floor(0, d), "nbytes"),
    (lambda d: read_floor(8, d, configs=()), "configs"),
])
def test_bad_arguments_are_named(device, call, match):
    with pytest.raises(ValueError, match=match):
        call(device)
