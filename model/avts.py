"""AVTS resampler: cached video and audio features + time tokens -> one interleaved multimodal sequence.

The video is cut into T windows (``window_s`` seconds each, stretched so T <= ``max_windows``). For window t:

    video_t  = video_queries learnable queries   } one shared attention layer whose keys/values are the window's
    audio_t  = audio_queries learnable queries   } video tokens (after the video MLP), audio tokens (after the audio
                                                 } MLP), the window's time token and the query's time token
    time_t   = TLP(window start, window end), passed through as it is

and the output is [video_1, audio_1, time_1, video_2, audio_2, time_2, ...]: (Qv + Qa + 1) * T tokens, each
layer-normalised and scaled to ``out_norm``, the length (L2) of the LLM's own token embeddings. Without it the
interleaved tokens came out 4x as long as the text's at initialisation and 16x after the demo's training, and the
trained LLM put 1.7% of its attention on them where they were 46% of the sequence (``model.diagnose``).

Choice: *learnable queries per window* rather than attention over the window's own tokens. The number of frames
and audio frames per window varies (keyframes are per clip; long videos stretch windows), and learnable queries
turn any number of keys into a fixed token budget per second, which is what the LLM's context can afford. The
queries are shared by all windows and told apart by adding the window's time token; because video and audio
queries attend over *both* modalities in one layer, each output token can already mix what is seen and heard.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import ResamplerConfig


def mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class AVTSResampler(nn.Module):
    def __init__(self, cfg: ResamplerConfig, d_video: int, d_audio: int, d_model: int, out_norm: float | None = None):
        """``out_norm``: the length of each output token (default sqrt(d_model), LayerNorm's own)."""
        super().__init__()
        self.cfg = cfg
        self.norm_out = nn.LayerNorm(d_model)
        # Not a parameter: the LLM's embedding length is a fact of the frozen LLM, recomputed when it is built.
        self.register_buffer("out_scale", torch.tensor((out_norm or d_model ** 0.5) / d_model ** 0.5),
                             persistent=False)
        self.video_mlp, self.audio_mlp = mlp(d_video, d_model), mlp(d_audio, d_model)
        self.queries = nn.Parameter(torch.randn(cfg.video_queries + cfg.audio_queries, d_model) * 0.02)
        self.modality = nn.Parameter(torch.zeros(3, d_model))  # video / audio / time, added to the keys
        self.norm_q, self.norm_kv, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, cfg.num_heads, batch_first=True)
        self.ffn = mlp(d_model, d_model)

    def forward(self, video, video_mask, audio, audio_mask, window_time, query_time):
        """video [B,T,Fv,Dv], video_mask [B,T,Fv]; audio [B,T,Fa,Da], audio_mask [B,T,Fa] (True = real token);
        window_time [B,T,D] (TLP of each window); query_time [B,D] (TLP of the question's range)
        -> [B, T * (Qv + Qa + 1), D]."""
        B, T, D = window_time.shape
        v = self.video_mlp(video) + self.modality[0]
        a = self.audio_mlp(audio) + self.modality[1]
        t = torch.stack([window_time, query_time[:, None].expand(B, T, D)], 2) + self.modality[2]
        kv = self.norm_kv(torch.cat([v, a, t], 2).flatten(0, 1))  # [B*T, Fv+Fa+2, D]
        keep = torch.cat([video_mask, audio_mask, video_mask.new_ones(B, T, 2)], 2).flatten(0, 1)
        q = (self.queries + window_time[:, :, None]).flatten(0, 1)  # [B*T, Qv+Qa, D]
        x = q + self.attn(self.norm_q(q), kv, kv, key_padding_mask=~keep, need_weights=False)[0]
        x = (x + self.ffn(self.norm_ffn(x))).view(B, T, -1, D)
        nv = self.cfg.video_queries
        tokens = torch.cat([x[:, :, :nv], x[:, :, nv:], window_time[:, :, None]], 2).flatten(1, 2)
        return self.norm_out(tokens) * self.out_scale
