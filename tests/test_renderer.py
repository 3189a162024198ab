"""Tests of gaussian_renderer.render with the pure-PyTorch backend (CPU)."""

import math

import pytest
import torch

from gaussian_renderer import render, torch_rasterizer
from gaussian_renderer.projection import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_MIN, project_gaussians


def _cameras(
    num: int, size: int, focal: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity-rotation cameras at the world origin looking down +z: viewmats [num,4,4], Ks [num,3,3]."""
    viewmats = torch.eye(4, dtype=dtype).repeat(num, 1, 1)
    k = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return viewmats, k.repeat(num, 1, 1)


def _random_scene(num: int, seed: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Random Gaussians in front of the camera: means, quats, scales, opacities, colors."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(num, 3, generator=gen, dtype=dtype) * 0.25
    means[:, 2] += 2.0
    quats = torch.randn(num, 4, generator=gen, dtype=dtype)
    scales = torch.rand(num, 3, generator=gen, dtype=dtype) * 0.04 + 0.005
    opacities = torch.rand(num, generator=gen, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(num, 3, generator=gen, dtype=dtype)
    return [means, quats, scales, opacities, colors]


def _dense_reference(gaussians: list[torch.Tensor], viewmats, Ks, width: int, height: int):
    """All pixels x all Gaussians, composited one Gaussian at a time in depth order (gsplat's rules)."""
    means, quats, scales, opacities, colors = gaussians
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack([xs, ys], -1).to(means.dtype) + 0.5
    images, alphas = [], []
    for cam in range(viewmats.shape[0]):
        trans = torch.ones(height, width, dtype=means.dtype)
        rgb = torch.zeros(height, width, 3, dtype=means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        visible = (proj.radii[cam] > 0).any(-1)
        for g in torch.argsort(proj.depths[cam]).tolist():
            if not visible[g]:
                continue
            d = proj.means2d[cam, g] - pix
            a, b, c = proj.conics[cam, g]
            sigma = 0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
            alpha = torch.clamp(opacities[g] * torch.exp(-sigma), max=MAX_ALPHA)
            use = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done
            next_t = trans * (1 - alpha)
            done = done | (use & (next_t <= TRANSMITTANCE_MIN))
            use = use & ~done
            rgb = rgb + torch.where(use[..., None], (alpha * trans)[..., None] * colors[g], 0.0)
            trans = torch.where(use, next_t, trans)
        images.append(rgb)
        alphas.append(1 - trans[..., None])
    return torch.stack(images), torch.stack(alphas)


def test_single_isotropic_gaussian_is_a_blob_with_expected_peak_and_sigma() -> None:
    size, focal, depth, scale, opacity = 33, 40.0, 2.0, 0.1, 0.8
    colour = torch.tensor([[0.2, 0.6, 1.0]])
    means = torch.tensor([[0.0, 0.0, depth]])
    viewmats, Ks = _cameras(1, size, focal)
    Ks[:, 0, 2] = Ks[:, 1, 2] = 16.5  # the centre projects onto the centre of pixel (16, 16)
    out = render(
        means,
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.full((1, 3), scale),
        torch.tensor([opacity]),
        colour,
        viewmats,
        Ks,
        size,
        size,
        backend="torch",
    )
    assert torch.allclose(out.means2d[0, 0], torch.tensor([16.5, 16.5]))
    assert torch.allclose(out.image[0, 16, 16], opacity * colour[0], atol=1e-6)
    var = (focal * scale / depth) ** 2 + 0.3
    for k in (1, 2, 4):
        expected = opacity * math.exp(-(k**2) / (2 * var))
        assert out.alpha[0, 16, 16 + k, 0].item() == pytest.approx(expected, rel=1e-5)
        assert out.alpha[0, 16 - k, 16, 0].item() == pytest.approx(expected, rel=1e-5)
    weights = out.alpha[0, ..., 0]
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    assert (weights.sum(0) * grid).sum() / weights.sum() == pytest.approx(16.5, abs=1e-4)
    assert (weights.sum(1) * grid).sum() / weights.sum() == pytest.approx(16.5, abs=1e-4)
    expected_radius = math.ceil(3.33 * math.sqrt(var))
    assert out.radii[0, 0].item() == expected_radius


@pytest.mark.parametrize("front_first", [True, False])
def test_two_gaussians_occlude_in_depth_order(front_first: bool) -> None:
    size = 16
    viewmats, Ks = _cameras(1, size, 20.0)
    Ks[:, 0, 2] = Ks[:, 1, 2] = size / 2 + 0.5  # both centres on the centre of pixel (8, 8)
    means = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    order = [0, 1] if front_first else [1, 0]
    out = render(
        means[order],
        torch.tensor([[1.0, 0, 0, 0]] * 2),
        torch.full((2, 3), 0.2),
        torch.tensor([0.9, 0.9]),
        colors[order],
        viewmats,
        Ks,
        size,
        size,
        backend="torch",
    )
    assert torch.allclose(out.image[0, size // 2, size // 2], torch.tensor([0.9, 0.9 * 0.1, 0.0]), atol=1e-6)


def test_background_colour_and_image_are_composited() -> None:
    size = 24
    gaussians = _random_scene(20, seed=1)
    viewmats, Ks = _cameras(2, size, 30.0)
    plain = render(*gaussians, viewmats, Ks, size, size, backend="torch")
    colour = torch.tensor([0.1, 0.5, 0.9])
    with_colour = render(*gaussians, viewmats, Ks, size, size, background=colour, backend="torch")
    assert torch.allclose(with_colour.image, plain.image + (1 - plain.alpha) * colour, atol=1e-6)
    image_bg = torch.rand(2, size, size, 3)
    with_image = render(*gaussians, viewmats, Ks, size, size, background=image_bg, backend="torch")
    assert torch.allclose(with_image.image, plain.image + (1 - plain.alpha) * image_bg, atol=1e-6)
    empty = plain.alpha[..., 0] == 0
    assert empty.any()
    assert torch.equal(with_image.image[empty], image_bg[empty])
    with pytest.raises(ValueError, match="background"):
        render(*gaussians, viewmats, Ks, size, size, background=torch.rand(size, 3), backend="torch")


def test_shapes_for_shared_and_batched_inputs() -> None:
    size, num, batch = 20, 30, 3
    gaussians = _random_scene(num, seed=2)
    viewmats, Ks = _cameras(batch, size, 25.0)
    viewmats[1, 0, 3] = 0.1
    viewmats[2, 1, 3] = -0.2
    shared = render(*gaussians, viewmats, Ks, size, size, backend="torch")
    per_camera = [g.expand(batch, *g.shape) for g in gaussians]
    batched = render(*per_camera, viewmats, Ks, size, size, backend="torch")
    for out in (shared, batched):
        assert out.image.shape == (batch, size, size, 3)
        assert out.alpha.shape == (batch, size, size, 1)
        assert out.means2d.shape == (batch, num, 2)
        assert out.radii.shape == (batch, num)
        assert out.radii.dtype == torch.int32
    assert torch.allclose(shared.image, batched.image)
    assert not torch.allclose(shared.image[0], shared.image[1])
    with pytest.raises(ValueError, match="opacities"):
        render(*gaussians[:3], gaussians[3][:-1], gaussians[4], viewmats, Ks, size, size, backend="torch")


def test_gaussians_behind_the_camera_contribute_nothing() -> None:
    size = 20
    gaussians = _random_scene(15, seed=3)
    viewmats, Ks = _cameras(1, size, 25.0)
    hidden = [
        torch.tensor([[0.0, 0.0, -2.0], [0.1, 0.0, 0.005], [0.0, 0.0, 0.0]]),
        torch.tensor([[1.0, 0, 0, 0]] * 3),
        torch.full((3, 3), 5.0),
        torch.full((3,), 0.9),
        torch.ones(3, 3),
    ]
    base = render(*gaussians, viewmats, Ks, size, size, backend="torch")
    merged = [torch.cat([g, h]) for g, h in zip(gaussians, hidden, strict=True)]
    extra = render(*merged, viewmats, Ks, size, size, backend="torch")
    assert torch.equal(extra.image, base.image)
    assert torch.equal(extra.radii[0, -3:], torch.zeros(3, dtype=torch.int32))


@pytest.mark.parametrize(("seed", "band_pixels"), [(0, 8192), (1, 8192), (2, 120)])
def test_box_rasterizer_matches_dense_reference(
    seed: int, band_pixels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch_rasterizer, "_BAND_PIXELS", band_pixels)  # 120: bands of 3 rows
    width, height = 40, 32
    gaussians = _random_scene(150, seed=seed)
    gaussians[2] = gaussians[2] * (1 + 3 * (torch.arange(150) % 7 == 0).float())[:, None]
    viewmats, Ks = _cameras(2, width, 35.0)
    Ks[:, 1, 2] = height / 2
    viewmats[1, :3, 3] = torch.tensor([0.2, -0.1, 0.3])
    out = render(*gaussians, viewmats, Ks, width, height, backend="torch")
    ref_image, ref_alpha = _dense_reference(gaussians, viewmats, Ks, width, height)
    assert out.alpha.max() > 0.99  # some pixels saturate, so the early stop is exercised
    assert (out.image - ref_image).abs().max() < 1e-5
    assert (out.alpha - ref_alpha).abs().max() < 1e-5


def test_gradients_match_finite_differences() -> None:
    size = 12
    gaussians = [g.requires_grad_() for g in _random_scene(4, seed=4, dtype=torch.float64)]
    viewmats, Ks = _cameras(2, size, 14.0, dtype=torch.float64)
    viewmats[1, 0, 3] = 0.05
    background = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)

    def fn(*params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = render(*params, viewmats, Ks, size, size, background=background, backend="torch")
        return out.image, out.alpha

    assert torch.autograd.gradcheck(fn, gaussians, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_means2d_gradient_is_retained_for_densification() -> None:
    size = 20
    gaussians = [g.requires_grad_() for g in _random_scene(10, seed=5)]
    gaussians[0].data[0, 2] = -1.0  # behind the camera
    viewmats, Ks = _cameras(2, size, 25.0)
    out = render(*gaussians, viewmats, Ks, size, size, backend="torch")
    (out.image * torch.rand_like(out.image)).sum().backward()
    grad = out.means2d.grad
    assert grad is not None and grad.shape == (2, 10, 2)
    assert torch.equal(grad[:, 0], torch.zeros(2, 2))
    assert (grad[:, 1:].norm(dim=-1) > 0).all()
    assert all(g.grad is not None and torch.isfinite(g.grad).all() for g in gaussians)


def test_empty_scene_renders_the_background() -> None:
    size = 8
    viewmats, Ks = _cameras(2, size, 10.0)
    colour = torch.tensor([0.2, 0.4, 0.6])
    out = render(
        torch.zeros(0, 3),
        torch.zeros(0, 4),
        torch.zeros(0, 3),
        torch.zeros(0),
        torch.zeros(0, 3),
        viewmats,
        Ks,
        size,
        size,
        background=colour,
        backend="torch",
    )
    assert torch.equal(out.image, colour.expand(2, size, size, 3))
    assert out.radii.shape == (2, 0)
