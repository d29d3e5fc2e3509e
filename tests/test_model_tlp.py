"""Time-range parsing (table) and the Temporal Linear Projection."""

from __future__ import annotations

import pytest
import torch

from model.tlp import TemporalLinearProjection, parse_time_range


@pytest.mark.parametrize("text, expected", [
    ("What happens from 1s to 13s?", (1.0, 13.0)),
    ("from 1 s to 13.5 seconds", (1.0, 13.5)),
    ("Between 2 sec and 4 secs, who speaks?", (2.0, 4.0)),
    ("From 00:05:53.160 to 00:08:07.200, how do the sounds change?", (353.16, 487.2)),
    ("At 00:03:57.480, what combination of sounds and visuals is present?", (237.48, 237.48)),
    ("00:05:53.160", (353.16, 353.16)),
    ("from 01:02:03 to 01:02:04.5", (3723.0, 3724.5)),
    ("from 05:53 to 08:07", (353.0, 487.0)),
    ("What is said from 1 minute to 2 minutes?", (60.0, 120.0)),
    ("in the first 1.5 hours", (5400.0, 5400.0)),
    ("from 13s to 1s", (1.0, 13.0)),  # reversed ranges are put in order
    ("From 00:00:08,000 to 00:00:16,000", (8.0, 16.0)),  # SRT-style comma
    ("From 00:00:01.000 to 00:00:02.000 and later 00:00:09.000", (1.0, 2.0)),  # first two times are the range
    ("What instrument is heard throughout the video?", None),
    ("How many people (3 or 4) appear in the mp3s?", None),  # numbers without a unit are not times
    ("", None),
])
def test_parse_time_range(text, expected):
    got = parse_time_range(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_tlp_shapes_and_normalisation():
    tlp = TemporalLinearProjection(d_model=8, time_norm_s=100.0)
    spans = torch.tensor([[[0.0, 10.0], [10.0, 20.0], [20.0, 30.0]]])
    out = tlp(spans, torch.tensor([[30.0]]))
    assert out.shape == (1, 3, 8)
    with torch.no_grad():
        tlp.proj.weight.zero_()
        tlp.proj.bias.zero_()
        tlp.proj.weight[0, 1] = 1.0  # end / time_norm_s
        tlp.proj.weight[1, 3] = 1.0  # end / duration
    out = tlp(spans, torch.tensor([[30.0]]))
    assert out[0, :, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert out[0, :, 1].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    # different timestamps give different tokens: the LLM can tell windows apart
    tlp2 = TemporalLinearProjection(d_model=8, time_norm_s=3600.0)
    tokens = tlp2(spans, torch.tensor([[30.0]]))[0]
    assert torch.cdist(tokens, tokens).triu(1)[torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)].min() > 0
