"""Mechanisms must accept SDPA's output in any memory layout.

CUDA's memory-efficient SDPA kernel returns (B, heads, N, d) laid out as (B, N, heads, d); a ``view``
that merges the batch with another dim then fails (found by the H200 backbone check: Swin-T at batch
64, fp32). Here ``attend`` is wrapped to return that layout on CPU, and every mechanism must give the
same output as with the contiguous one.
"""
import pytest
import torch

import mechanisms
from mechanisms import axial, base, cswin, global_attention, pale, slide, swin

MODULES = {"global": global_attention, "swin": swin, "cswin": cswin, "axial": axial, "pale": pale, "slide": slide}
OPTIONS = {"swin": {"window_size": 4, "shift": 2}, "cswin": {"split_size": 3}, "pale": {"pale_size": 3}}


_attend = base.attend


def _strided_attend(*args, **kwargs):
    out = _attend(*args, **kwargs)
    strided = out.transpose(-3, -2).contiguous().transpose(-3, -2)
    assert not strided.is_contiguous() or out.shape[-3] == 1
    return strided


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("backend", ["native", "masked"])
def test_output_independent_of_sdpa_layout(name, backend, monkeypatch):
    module = mechanisms.build(name, 16, 4, backend=backend, **OPTIONS.get(name, {})).eval()
    x = torch.randn(3, 10, 9, 16)
    with torch.no_grad():
        expected = module(x)
        monkeypatch.setattr(MODULES[name], "attend", _strided_attend)
        monkeypatch.setattr(base, "attend", _strided_attend)  # the base class's `masked` backend
        got = module(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
