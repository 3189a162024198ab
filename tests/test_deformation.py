"""Tests of the deformation network and its building blocks (CPU, small sizes)."""

import time

import pytest
import torch

from scene.attention import SpatialAudioAttention
from scene.audio_encoder import AudioEncoder, LinearAudioEncoder
from scene.deformation import TOKENS, DeformationNetwork, DeformConfig, Deltas
from scene.kan import KAN, KANHeads, KANLinear, fuse_rbf
from scene.stacked_lips import StackedLinearLipPredictors, StackedLipPredictors, stacked_lip_predictors
from scene.triplane import TriPlane
from utils.cli import UserError

C, W = 6, 5
BOUNDS = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def make_net(**overrides: object) -> DeformationNetwork:
    """Small network for tests."""
    small = {"triplane_resolutions": (8, 16), "triplane_channels": 8, "mouth_radius": 0.5}
    cfg = DeformConfig(audio_channels=C, audio_window=W, **{**small, **overrides})
    torch.manual_seed(0)
    return DeformationNetwork(cfg, BOUNDS)


def conditions(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random audio [B,C,W], eye [B,1], cam [B,12]."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, C, W, generator=g),
        torch.rand(batch, 1, generator=g),
        torch.randn(batch, 12, generator=g),
    )


def all_deltas(d: Deltas) -> list[torch.Tensor]:
    """The five delta tensors."""
    return [d.d_xyz, d.d_rot, d.d_scale, d.d_opacity, d.d_color]


def perturb_heads(net: DeformationNetwork) -> None:
    """Give the zero-initialised last head layers random weights so outputs depend on inputs."""
    with torch.no_grad():
        for head in net.heads.rest.values():
            for p in head.layers[-1].parameters():
                p.normal_(0.0, 0.1)


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_and_zero_init(batch: int) -> None:
    net = make_net()
    xyz = torch.rand(1000, 3) * 2 - 1
    d = net(xyz, *conditions(batch))
    expected = [(batch, 1000, 3), (batch, 1000, 4), (batch, 1000, 3), (batch, 1000, 1), (batch, 1000, 3)]
    assert [tuple(t.shape) for t in all_deltas(d)] == expected
    for t in all_deltas(d):
        assert torch.count_nonzero(t) == 0


def test_mouth_scope_confines_audio_to_the_mouth_region() -> None:
    net = make_net(audio_scope="mouth", mouth_centre=(0.0, 0.5, 0.0), mouth_radius=0.3)
    perturb_heads(net)
    near = torch.tensor([[0.0, 0.5, 0.0], [0.1, 0.45, 0.05]])
    far = torch.tensor([[0.0, -0.6, 0.0], [0.7, 0.0, 0.3]])
    xyz = torch.cat([near, far])
    audio, eye, cam = conditions(2)
    a, b = net(xyz, audio, eye, cam), net(xyz, audio * 5 + 3, eye, cam)
    change = (a.d_xyz - b.d_xyz).abs().amax(dim=(0, 2))  # [N]
    assert change[2:].max() < 1e-3 * change[:2].min()
    weight = net.mouth_weight(xyz)
    assert weight[0] == 1 and weight[2:].max() < 1e-6
    everywhere = make_net(audio_scope="everywhere")
    perturb_heads(everywhere)
    spread = (everywhere(xyz, audio, eye, cam).d_xyz - everywhere(xyz, audio * 5 + 3, eye, cam).d_xyz).abs()
    assert spread.amax(dim=(0, 2))[2:].min() > 1e-4


# lips about (0, 0.5, 0), 0.25 wide, and a jaw line below them (the mouth_anchors of audio_scope 'lower_face')
LIPS_AND_JAW = ((-0.12, 0.5, 0.0), (0.0, 0.52, 0.0), (0.12, 0.5, 0.0), (-0.15, 0.3, 0.0), (0.0, 0.25, 0.0),
                (0.15, 0.3, 0.0))  # fmt: skip
MOUTH = {"mouth_centre": (0.0, 0.5, 0.0), "mouth_radius": 0.3, "mouth_anchors": sum(LIPS_AND_JAW, ())}


@pytest.mark.parametrize("scope", ["mouth", "mouth_only", "lower_face"])
def test_mouth_only_scope_keeps_the_lips_off_the_head_even_with_large_learnt_logits(scope: str) -> None:
    # Training can grow the attention logits until the audio token overcomes the 'mouth' floor (1e-4 of its
    # weight) and the lip code moves hair and head; 'mouth_only' and 'lower_face' have no floor, so three
    # radii away it cannot.
    net = make_net(audio_scope=scope, **MOUTH)
    perturb_heads(net)
    with torch.no_grad():  # logits 36 times the initial ones, as learnt weights may make them
        net.attention.to_q.weight.mul_(6.0)
        net.attention.to_k.weight.mul_(6.0)
    g = torch.Generator().manual_seed(3)
    near = torch.tensor([[0.0, 0.5, 0.0], [0.1, 0.45, 0.05]])
    far = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1) * 0.9 + near[0]
    xyz = torch.cat([near, far])
    audio, eye, cam = conditions(2)
    lips = torch.randn(2, 3, generator=g)
    with torch.no_grad():
        a, b = net(xyz, audio, eye, cam, lips), net(xyz, audio, eye, cam, lips * 3 + 2)
    change = (a.d_xyz - b.d_xyz).abs().amax(dim=(0, 2))  # [N]
    assert change[:2].min() > 1e-3
    if scope == "mouth":
        assert change[2:].max() > 0.1 * change[:2].min()  # the floor was overcome: the lips reach the head
    else:
        assert change[2:].max() < 1e-6 * change[:2].min()


def test_lower_face_scope_takes_in_the_jaw_and_leaves_out_what_a_sphere_about_the_mouth_holds() -> None:
    sphere, lower_face = (make_net(audio_scope=s, **MOUTH) for s in ("mouth_only", "lower_face"))
    audio = TOKENS.index("audio")
    eye, jaw = torch.tensor([[0.1, 0.78, 0.05]]), torch.tensor([[0.1, 0.22, 0.05]])  # 0.3 above / below
    for xyz in (eye, jaw):  # the same distance from the mouth centre: the sphere cannot tell them apart
        assert sphere.spatial_features(xyz).token_bias[0, audio] == pytest.approx(-0.95, abs=0.1)
    assert lower_face.spatial_features(jaw).token_bias[0, audio] > -0.5  # 0.12 from the jaw line
    assert lower_face.spatial_features(eye).token_bias[0, audio] < -8  # 0.27 from the lips, reach 0.15
    assert (
        torch.count_nonzero(lower_face.spatial_features(eye).token_bias[:, 1:]) == 0
    )  # the audio token only
    with pytest.raises(ValueError, match="mouth_anchors"):
        make_net(audio_scope="lower_face", mouth_centre=(0.0, 0.5, 0.0), mouth_radius=0.3)


def test_lip_code_is_driven_by_given_lips_or_their_prediction_from_audio() -> None:
    net = make_net(audio_code="lips")
    perturb_heads(net)
    xyz = torch.rand(100, 3) * 2 - 1
    audio, eye, cam = conditions(2)
    lips = torch.randn(2, 3)
    assert net.predict_lips(audio).shape == (2, 3)
    given = net(xyz, audio, eye, cam, lips)
    other_audio = net(xyz, audio * 5 + 3, eye, cam, lips)
    for x, y in zip(all_deltas(given), all_deltas(other_audio), strict=True):
        assert torch.equal(x, y)  # tracked lips replace the audio entirely
    predicted = net(xyz, audio, eye, cam, net.predict_lips(audio))
    torch.testing.assert_close(net(xyz, audio, eye, cam).d_xyz, predicted.d_xyz)
    assert not torch.allclose(given.d_xyz, predicted.d_xyz)


def test_config_rejects_unknown_choices_and_a_mouth_scope_without_region() -> None:
    with pytest.raises(ValueError, match="audio_scope"):
        DeformConfig(audio_scope="face")
    with pytest.raises(ValueError, match="audio_code"):
        DeformConfig(audio_code="words")
    for scope in ("mouth", "mouth_only"):
        with pytest.raises(ValueError, match=f"'{scope}' needs a positive mouth_radius"):
            DeformationNetwork(DeformConfig(audio_scope=scope), torch.tensor([[-1.0] * 3, [1.0] * 3]))


def test_cached_features_match_forward() -> None:
    net = make_net()
    perturb_heads(net)
    xyz = torch.rand(200, 3) * 2 - 1
    cond = conditions(2)
    a = net(xyz, *cond)
    b = net.forward_with_features(net.spatial_features(xyz), *cond)
    for x, y in zip(all_deltas(a), all_deltas(b), strict=True):
        torch.testing.assert_close(x, y)


def test_gradients_reach_all_parts_after_one_step() -> None:
    net = make_net()
    xyz = torch.rand(300, 3) * 2 - 1
    cond = conditions(2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        d = net(xyz, *cond)
        loss = sum((t - 0.05).square().mean() for t in all_deltas(d)) + net.regularization()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.triplane.planes)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.audio_encoder.parameters())
    assert net.heads.first.spline.weight.grad.abs().sum() > 0
    for head in net.heads.rest.values():
        assert head.layers[-1].spline.weight.grad.abs().sum() > 0


def test_learns_audio_dependent_offset() -> None:
    net = make_net(token_dim=32, kan_hidden=(32,))
    torch.manual_seed(2)
    xyz = torch.rand(32, 3) * 2 - 1
    audio = torch.randn(8, C, W)
    eye, cam = torch.full((8, 1), 0.5), torch.zeros(8, 12)
    amp = audio[:, 0].mean(dim=1)  # [8]
    target = 0.05 * amp[:, None, None] * torch.tanh(xyz[None, :, :])  # position- and audio-dependent [8,32,3]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(250):
        opt.zero_grad()
        loss = (net(xyz, audio, eye, cam).d_xyz - target).square().mean()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    final = (net(xyz, audio, eye, cam).d_xyz - target).square().mean().item()
    assert final < 0.1 * first
    d_other = net(xyz, torch.randn(8, C, W), eye, cam).d_xyz
    assert not torch.allclose(d_other, net(xyz, audio, eye, cam).d_xyz)


def test_large_forward_on_cpu() -> None:
    net = make_net(triplane_resolutions=(32, 64, 128), triplane_channels=16)
    xyz = torch.rand(50_000, 3) * 2 - 1
    start = time.process_time()  # CPU time: robust to other processes sharing the machine
    with torch.no_grad():
        d = net(xyz, *conditions(8))
    assert time.process_time() - start < 60.0
    assert d.d_xyz.shape == (8, 50_000, 3) and torch.isfinite(d.d_color).all()


def test_config_round_trip() -> None:
    cfg = DeformConfig(triplane_resolutions=(16, 32), kan_hidden=(32, 32), audio_channels=29, audio_window=16)
    assert DeformConfig.from_dict(cfg.to_dict()) == cfg
    import json

    assert DeformConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(UserError, match="deformation network has unknown settings no_such_key;"):
        DeformConfig.from_dict({"no_such_key": 1})
    # a model saved before audio_scope and audio_code existed ran with the audio everywhere, freely coded
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("audio_scope", "audio_code")}
    assert (cfg.audio_scope, cfg.audio_code) == ("mouth", "lips")
    assert DeformConfig.from_dict(old) == DeformConfig(**{**cfg.__dict__, "audio_scope": "everywhere",
                                                           "audio_code": "free"})  # fmt: skip


def test_triplane_clamps_and_tv() -> None:
    tp = TriPlane(BOUNDS, resolutions=(4, 8), channels=3)
    inside = tp(torch.tensor([[1.0, 1.0, 1.0]]))
    outside = tp(torch.tensor([[5.0, 9.0, 2.0]]))
    assert inside.shape == (1, 6)
    torch.testing.assert_close(inside, outside)
    assert tp.tv_loss() > 0
    with pytest.raises(ValueError):
        TriPlane(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]))


def test_building_blocks() -> None:
    kan = KAN([5, 7, 2])
    assert kan(torch.randn(4, 3, 5)).shape == (4, 3, 2)
    for hidden in [(), (4, 4)]:
        heads = KANHeads(8, hidden, {"a": 2, "b": 1})
        out = heads(torch.randn(3, 8))
        assert out["a"].shape == (3, 2) and out["b"].shape == (3, 1)
        assert torch.count_nonzero(out["a"]) == 0 and torch.count_nonzero(out["b"]) == 0
    enc = AudioEncoder(in_channels=3, window=1, dim=16)
    assert enc(torch.randn(2, 3, 1)).shape == (2, 16)
    with pytest.raises(ValueError):
        enc(torch.randn(2, 4, 1))
    attn = SpatialAudioAttention(16, heads=4)
    feat, tokens = torch.randn(10, 16), torch.randn(2, 4, 16)
    assert attn(feat, tokens).shape == (2, 10, 16)
    # A very negative bias on a token removes it: the same as attending to the other tokens only.
    bias = torch.zeros(10, 4)
    bias[:, 0] = -1e4
    moved = tokens.clone()
    moved[:, 0] = torch.randn(2, 16)
    torch.testing.assert_close(attn(feat, tokens, bias), attn(feat, moved, bias))
    assert not torch.allclose(attn(feat, tokens), attn(feat, moved))


def test_only_the_inference_renderer_fuses_the_rbf_expansion_and_only_on_cuda() -> None:
    net = make_net()
    layers = [m for m in net.modules() if isinstance(m, KANLinear)]
    assert layers and not any(layer.fused for layer in layers)  # training and validation: eager
    fuse_rbf(net, True)
    assert all(layer.fused for layer in layers)
    fuse_rbf(net, False)
    assert not any(layer.fused for layer in layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused RBF kernel is compiled for CUDA")
def test_fused_rbf_expansion_matches_eager_on_cuda() -> None:
    net = make_net().cuda()
    perturb_heads(net)
    xyz = (torch.rand(500, 3) * 2 - 1).cuda()
    cond = [c.cuda() for c in conditions(2)]
    with torch.no_grad():
        eager = net(xyz, *cond).d_xyz
        fuse_rbf(net, True)
        torch.testing.assert_close(net(xyz, *cond).d_xyz, eager, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("encoder", ["attention", "linear", "linear_corpus"])
@pytest.mark.parametrize("predictors", [1, 2])
def test_stacked_lip_predictors_give_each_predictors_measures(predictors: int, encoder: str) -> None:
    net = make_net(lip_predictors=predictors, lip_encoder=encoder)
    with torch.no_grad():  # trained-like weights: every layer, the LayerNorms and biases too, matters
        for param in net.parameters():
            param.normal_(0.0, 0.3)
    kinds = [isinstance(net.audio_encoder, LinearAudioEncoder)]
    if predictors == 2:
        kinds.append(isinstance(net.corpus_audio_encoder, LinearAudioEncoder))
    # linear_corpus: the corpus predictor linear, the clip's own (and a lone predictor) by attention
    expected = {"attention": [False, False], "linear": [True, True], "linear_corpus": [False, True]}
    assert kinds == expected[encoder][:predictors]
    stacked = stacked_lip_predictors(net)
    for batch in (1, 4):
        audio = conditions(batch)[0]
        with torch.no_grad():
            expected = net.lip_predictions(audio)
            got = stacked(audio)
        assert got.shape == (predictors, batch, 3)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    if predictors == 2:  # the two predictors differ, and the stack keeps them apart
        assert not torch.allclose(got[0], got[1])
    with pytest.raises(ValueError, match="audio features"):
        stacked(torch.randn(1, C + 1, W))
    with pytest.raises(ValueError, match="lip predictors"):
        stacked_lip_predictors(make_net(audio_code="free", lip_encoder=encoder))


def test_each_stack_reads_its_own_kind_of_encoder_only() -> None:
    attention, linear = make_net(), make_net(lip_encoder="linear")
    with pytest.raises(ValueError, match="attention lip encoders"):
        StackedLipPredictors([linear.audio_encoder], [linear.lip_head])
    with pytest.raises(ValueError, match="linear lip encoders"):
        StackedLinearLipPredictors([attention.audio_encoder], [attention.lip_head])


@pytest.mark.parametrize("encoder", ["attention", "linear", "linear_corpus"])
def test_stacked_lip_predictors_copy_the_weights(encoder: str) -> None:
    net = make_net(lip_predictors=2, lip_encoder=encoder)
    stacked = stacked_lip_predictors(net)
    audio = conditions(2)[0]
    with torch.no_grad():
        before = stacked(audio)
        net.corpus_lip_head.bias.add_(1.0)  # training goes on: the stack is what it copied
        torch.testing.assert_close(stacked(audio), before)
    assert not any(p.requires_grad for p in stacked.parameters())


def test_linear_lip_encoder_is_affine_in_the_window_and_trains() -> None:
    net = make_net(lip_predictors=2, lip_encoder="linear")
    a, b = conditions(3, seed=1)[0], conditions(3, seed=2)[0]
    zero = torch.zeros_like(a)
    with torch.no_grad():  # no hidden layer: f(a + b) - f(b) = f(a) - f(0), for each predictor
        lhs = net.lip_predictions(a + b) - net.lip_predictions(b)
        torch.testing.assert_close(
            lhs, net.lip_predictions(a) - net.lip_predictions(zero), atol=1e-5, rtol=1e-4
        )
        attention = make_net(lip_predictors=2)  # the attention encoder is not
        lhs = attention.lip_predictions(a + b) - attention.lip_predictions(b)
        assert not torch.allclose(
            lhs, attention.lip_predictions(a) - attention.lip_predictions(zero), atol=1e-3
        )
    target = torch.randn(3, 3, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.Adam(net.lip_predictor_parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        loss = (net.lip_predictions(a) - target).square().mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    with pytest.raises(ValueError, match="audio features"):
        net.lip_predictions(torch.randn(1, C, W + 1))


def test_lip_encoder_choice_is_checked_and_saved_models_keep_theirs() -> None:
    with pytest.raises(ValueError, match="lip_encoder"):
        DeformConfig(lip_encoder="lstm")
    cfg = DeformConfig(lip_encoder="linear")
    assert DeformConfig.from_dict(cfg.to_dict()).lip_encoder == "linear"
    saved_before = {k: v for k, v in cfg.to_dict().items() if k != "lip_encoder"}
    assert DeformConfig.from_dict(saved_before).lip_encoder == "attention"
