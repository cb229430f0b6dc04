"""Grad-CAM on a hand-built head, and pixel-adaptive refinement."""
import pytest
import torch

from pagkd_core.distill.gradcam import grad_cam
from pagkd_core.distill.par import PAR


def linear_head(features, weight):
    """Global average pool + linear, as the classifier head."""
    return features.mean(dim=(2, 3)) @ weight.T


def test_gradcam_on_linear_head():
    # Two channels: a horizontal ramp and a vertical ramp. Class 0 weights (2, -1), class 1 (0, 1).
    ramp = torch.arange(4.0)
    f = torch.stack([ramp.expand(4, 4), ramp[:, None].expand(4, 4)])[None].repeat(2, 1, 1, 1)
    f.requires_grad_()
    weight = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    cam = grad_cam(f, linear_head(f, weight), torch.tensor([0, 1]))
    # d logit_y / d f = weight[y] / (h w) everywhere, so CAM = ReLU(sum_c weight[y, c] f_c) / 16.
    raw0 = torch.relu(2 * f[0, 0] - f[0, 1]).detach()
    raw1 = torch.relu(f[1, 1]).detach()
    for got, raw in ((cam[0], raw0), (cam[1], raw1)):
        expected = (raw - raw.min()) / (raw.max() - raw.min())
        torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=0)
    assert cam.shape == (2, 4, 4)
    assert cam[1, 3].tolist() == pytest.approx([1.0] * 4, abs=1e-5)   # bottom row peaks for class 1


def test_gradcam_flat_map_is_finite_zero():
    f = torch.ones(1, 2, 3, 3, requires_grad=True)
    cam = grad_cam(f, linear_head(f, torch.ones(2, 2)), torch.tensor([0]))
    assert torch.equal(cam, torch.zeros(1, 3, 3))


def test_gradcam_create_graph_is_differentiable_and_keeps_forward_graph():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    conv = torch.nn.Conv2d(3, 5, 1)
    f = torch.tanh(conv(x))
    logits = f.mean(dim=(2, 3)) @ torch.randn(3, 5).T
    cam = grad_cam(f, logits, torch.tensor([0, 2]), create_graph=True)
    (g,) = torch.autograd.grad(cam.sum(), conv.weight, retain_graph=True)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    logits.sum().backward()   # the trainer still back-propagates through the logits afterwards
    assert x.grad is not None


def test_gradcam_needs_features_with_grad():
    f = torch.randn(1, 2, 2, 2)
    with pytest.raises(ValueError, match="requires_grad_"):
        grad_cam(f, linear_head(f, torch.ones(2, 2)), torch.tensor([0]))


def test_par_keeps_range_and_constant_maps():
    torch.manual_seed(1)
    par = PAR()
    image = torch.randn(2, 3, 32, 32)
    maps = torch.rand(2, 2, 4, 4)
    out = par(image, maps)
    assert out.shape == maps.shape and out.min() >= 0 and out.max() <= 1
    const = torch.full((2, 2, 4, 4), 0.42)
    torch.testing.assert_close(par(image, const), const)
    # [background, CAM] stays a partition of one.
    cam = torch.rand(2, 1, 4, 4)
    out = par(image, torch.cat([1 - cam, cam], 1))
    torch.testing.assert_close(out.sum(1), torch.ones(2, 4, 4))


def test_par_on_constant_image_is_a_uniform_neighbour_average():
    par = PAR(dilations=(1,), iterations=1, distance_weight=0.0)
    image = torch.full((1, 3, 5, 5), 0.7)
    weights = par.affinity(image)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 8))
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 2, 2] = 1.0
    out = par(image, maps)
    assert out[0, 0, 2, 2] == 0 and out[0, 0, 1, 1] == pytest.approx(1 / 8)


def test_par_respects_image_edges():
    # Left half dark, right half bright; a CAM lit only on the left should not leak right.
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0
    maps = torch.zeros(1, 1, 8, 8)
    maps[..., :4] = 1.0
    edge = PAR()(image, maps)
    flat = PAR()(torch.zeros(1, 3, 8, 8), maps)
    assert edge[..., 4:].mean() < 0.1 < flat[..., 4:].mean()
    assert edge[..., :4].mean() > 0.9


def test_par_rejects_bad_options():
    with pytest.raises(ValueError, match="dilations"):
        PAR(dilations=(0, 1))


def test_gradcam_refuses_no_grad_mode():
    f = torch.randn(1, 2, 2, 2, requires_grad=True)
    logits = linear_head(f, torch.ones(2, 2))
    with torch.no_grad(), pytest.raises(RuntimeError, match="no_grad"):
        grad_cam(f, logits, torch.tensor([0]))


def _square_scene():
    """96 px image with a bright centre square; a 3x3 CAM lit on the centre token (stride 32)."""
    image = torch.zeros(1, 3, 96, 96)
    image[..., 32:64, 32:64] = 1.0
    cam = torch.zeros(1, 1, 3, 3)
    cam[..., 1, 1] = 1.0
    return image, torch.cat([1 - cam, cam], 1)


def test_par_image_placement_refines_at_half_resolution_then_pools():
    image, maps = _square_scene()
    par = PAR(iterations=5, placement="image")
    up = torch.nn.functional.interpolate(maps, size=(48, 48), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.adaptive_avg_pool2d(par.refine(image, up), (3, 3))
    torch.testing.assert_close(par(image, maps), expected)
    assert PAR().placement == "image"
    with pytest.raises(ValueError, match="placement"):
        PAR(placement="pixels")


def test_par_grid_placement_erases_a_coarse_lesion_token_image_placement_keeps_it():
    # On a 3x3 grid, dilations up to 8 reach the whole map and a token never averages with
    # itself: the grid placement turns the lesion token into background; the authors' placement
    # keeps it the map's peak (above 0.5, the up-sampling's own blur included).
    from pagkd_core.distill.dense import discretise

    image, maps = _square_scene()
    on_image = PAR(iterations=5, placement="image")(image, maps)[0, 1]
    on_grid = PAR(iterations=5, placement="grid")(image, maps)[0, 1]
    assert on_image[1, 1] > 0.5 and on_image[1, 1] == on_image.max()
    assert discretise(on_grid)[1, 1] == 0 and (discretise(on_image).flatten()[[0, 2, 6, 8]] == 0).all()
