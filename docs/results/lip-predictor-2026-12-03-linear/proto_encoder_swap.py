"""Prototype: the lip predictor's audio encoder swapped for a linear map of the window (outside the tree)."""
import sys
import torch
from torch import nn
import bench.diagnostics.lip_predictor as lp

orig = lp.predictor
kind = sys.argv.pop(1)

def linear_predictor(train_set, cfg, pool=None):
    net = orig(train_set, cfg, pool)
    c, w = train_set.audio_shape
    d = net.cfg.token_dim
    def enc():
        return nn.Sequential(nn.Flatten(), nn.Linear(c * w, d))
    if kind == "linear":
        net.audio_encoder = enc()
        if net.cfg.lip_predictors == 2:
            net.corpus_audio_encoder = enc()
    elif kind == "conv":  # a temporal conv then pooled linear
        def cenc():
            return nn.Sequential(nn.Conv1d(c, d, 5, padding=2), nn.LeakyReLU(0.02), nn.Flatten(), nn.Linear(d * w, d))
        net.audio_encoder = cenc()
        if net.cfg.lip_predictors == 2:
            net.corpus_audio_encoder = cenc()
    return net

if kind != "attention":
    lp.predictor = linear_predictor
sys.exit(lp.main())
