"""AVTS resampler: output shapes, the per-time-step interleaving [video_t, audio_t, time_t], window packing."""

from __future__ import annotations

import pytest
import torch

from model.avts import AVTSResampler
from model.config import ResamplerConfig
from model.features import VideoFeatures, pack_windows, window_spans

CFG = ResamplerConfig(window_s=2.0, max_windows=8, video_queries=3, audio_queries=2, num_heads=2,
                      max_frames_per_window=2, max_audio_per_window=4)
B, T, FV, FA, DV, DA, D = 2, 4, 6, 4, 12, 10, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than they save, badly so on a busy machine
    yield
    torch.set_num_threads(n)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    video, audio = torch.randn(B, T, FV, DV, generator=g), torch.randn(B, T, FA, DA, generator=g)
    vmask, amask = torch.ones(B, T, FV, dtype=torch.bool), torch.ones(B, T, FA, dtype=torch.bool)
    amask[1, :, 2:] = False  # some padded audio slots
    amask[0, 3] = False  # a window with no audio at all
    return video, vmask, audio, amask, torch.randn(B, T, D, generator=g), torch.randn(B, D, generator=g)


def resampler():
    torch.manual_seed(0)
    return AVTSResampler(CFG, DV, DA, D).eval()


def test_output_shape_and_token_budget():
    out = resampler()(*inputs())
    assert out.shape == (B, T * CFG.tokens_per_window, D)
    assert CFG.tokens_per_window == 3 + 2 + 1
    assert CFG.tokens_per_second == pytest.approx(3.0)
    assert torch.isfinite(out).all()  # a window with every audio slot masked still attends to its time tokens


def blocks(out):
    """[B, T, k, D]: one block per time step."""
    return out.view(B, T, CFG.tokens_per_window, D)


def test_interleaving_order_per_time_step():
    model, x = resampler(), inputs()
    base = blocks(model(*x))
    k_v, k_a = CFG.video_queries, CFG.audio_queries
    # time_t is the window's time token, passed through (normalised like every output token), last in every block
    assert torch.allclose(base[:, :, k_v + k_a], model.norm_out(x[4]) * model.out_scale)
    # video queries feed only the first k_v slots of every block; audio queries only the next k_a
    shift = torch.linspace(-1.0, 1.0, D)  # not a constant: the output LayerNorm would take a constant away
    with torch.no_grad():
        model.queries[:k_v] += shift
    moved = blocks(model(*x))
    assert not torch.allclose(moved[:, :, :k_v], base[:, :, :k_v])
    assert torch.equal(moved[:, :, k_v:], base[:, :, k_v:])
    model = resampler()
    with torch.no_grad():
        model.queries[k_v:] += shift
    moved = blocks(model(*x))
    assert torch.equal(moved[:, :, :k_v], base[:, :, :k_v])
    assert not torch.allclose(moved[:, :, k_v:k_v + k_a], base[:, :, k_v:k_v + k_a])
    # window t's features reach only block t, and both its video and audio slots (one shared attention)
    model = resampler()
    video = x[0].clone()
    video[:, 2] += 5.0
    moved = blocks(model(video, *x[1:]))
    for t in range(T):
        same = torch.equal(moved[:, t], base[:, t])
        assert same == (t != 2), t
    assert not torch.allclose(moved[:, 2, k_v:k_v + k_a], base[:, 2, k_v:k_v + k_a])
    # masked (padded) audio slots are ignored
    audio = x[2].clone()
    audio[1, :, 2:] = 99.0
    assert torch.allclose(blocks(model(x[0], x[1], audio, *x[3:])), base, atol=1e-6)


def test_query_time_token_conditions_every_window():
    model, x = resampler(), inputs()
    base = model(*x)
    query = x[5].clone()
    query[0] += 1.0
    moved = model(*x[:5], query)
    assert not torch.allclose(moved[0], base[0]) and torch.equal(moved[1], base[1])


def features(duration=9.0):
    vision = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, 2, 3).clone()  # frame i is all i
    vision_t = torch.tensor([0.5, 1.0, 1.5, 7.0, 8.9])
    audio = torch.arange(18, dtype=torch.float32).view(18, 1).expand(18, 2).clone()  # token j is all j
    audio_t = (torch.arange(18) + 0.5) / 2.0
    return VideoFeatures("local-x", duration, vision, vision_t, audio, audio_t, {})


def test_window_spans_cover_the_span_within_budget():
    spans = window_spans((0.0, 9.0), CFG)
    assert spans.shape == (5, 2) and spans[0, 0] == 0 and spans[-1, 1] == 9.0
    assert torch.equal(spans[1:, 0], spans[:-1, 1])
    long = window_spans((0.0, 3600.0), CFG)  # an hour: windows stretch, the count stays at the budget
    assert long.shape == (CFG.max_windows, 2) and long[0, 1] == pytest.approx(450.0)
    assert window_spans((3.0, 3.0), CFG).shape == (1, 2)  # a time point still gets a window


def test_pack_windows_assigns_frames_and_audio_by_time():
    w = pack_windows(features(), (0.0, 9.0), CFG)
    P = 2
    assert w["video"].shape == (5, CFG.max_frames_per_window * P, 3)
    assert w["audio"].shape == (5, CFG.max_audio_per_window, 2)
    frames_in = lambda t: w["video"][t][w["video_mask"][t]][:, 0].unique().tolist()
    assert frames_in(0) == [0.0, 2.0]  # three frames in [0, 1.8): evenly thinned to the first and last
    assert frames_in(1) == [2.0]  # no frame inside: the nearest one
    assert frames_in(3) == [3.0]  # 7.0 s
    assert frames_in(4) == [4.0]  # 8.9 s, inside the last window (which includes its end)
    # audio tokens at 2 Hz: 3-4 per 1.8 s window, none pooled (budget 4)
    a0 = w["audio"][0][w["audio_mask"][0]][:, 0].tolist()
    assert a0 == [0.0, 1.0, 2.0, 3.0]  # centres 0.25 .. 1.75 s
    assert int(w["audio_mask"].sum()) == 18  # every audio token lands in exactly one window
    # a clip span takes only its own windows
    clip = pack_windows(features(), (7.0, 9.0), CFG)
    assert clip["window_spans"].tolist() == [[7.0, 9.0]]
    assert clip["video"][0][clip["video_mask"][0]][:, 0].unique().tolist() == [3.0, 4.0]


def test_pack_windows_pools_audio_over_budget_and_handles_no_audio():
    feats = features()
    long_cfg = CFG.model_copy(update={"window_s": 9.0})
    w = pack_windows(feats, (0.0, 9.0), long_cfg)  # one window, 18 tokens -> pooled to 4
    assert w["audio_mask"].tolist() == [[True] * 4]
    assert w["audio"][0, :, 0].tolist() == pytest.approx([2.0, 6.0, 11.0, 15.0])  # adaptive-pool bins, in order
    silent = VideoFeatures("local-x", 9.0, feats.vision, feats.vision_t, torch.zeros(0, 2), torch.zeros(0), {})
    w = pack_windows(silent, (0.0, 9.0), CFG)
    assert not w["audio_mask"].any() and w["video_mask"].any()


def test_output_tokens_are_as_long_as_out_norm():
    """Every interleaved token leaves at the length it is told (the LLM's embedding length, in SavenVid)."""
    torch.manual_seed(0)
    model = AVTSResampler(CFG, DV, DA, D, out_norm=0.7).eval()
    x = list(inputs())
    x[0] = x[0] * 50  # however large the features
    lengths = model(*x).norm(dim=-1)
    assert torch.allclose(lengths, torch.full_like(lengths, 0.7), rtol=1e-3)
