"""The distiller as the trainer calls it: methods, levels, gradient flow, determinism."""
import pytest
import torch
from torch import nn

from pagkd_core.config import DistillConfig
from pagkd_core.distill import METHODS, Views, build_distiller
from pagkd_core.distill.groups import make_groups

K, C_S, C_T, D = 2, 6, 10, 16


def config(**over):
    base = {"method": "pro+den", "level": "group", "pairing": "random", "n_queries": 4, "blocks": 1,
            "heads": 2, "temperature": 0.1, "set_classifier": False, "kd_temperature": 4.0,
            "cam_low": 0.3, "cam_high": 0.7, "par_iters": 3, "par_dilations": (1, 2), "use_par": True,
            "den_heads": 1, "den_loss": "l2", "embed_dim": D}
    base.update(over)
    return DistillConfig(**base)


class TinyNet(nn.Module):
    """LesionNet's contract in miniature: forward_features, embed, classify."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, stride=4, padding=1), nn.ReLU())
        self.proj = nn.Conv2d(channels, D, 1)
        self.head = nn.Linear(channels, K)

    def forward_features(self, x):
        return self.body(x)

    def embed(self, features):
        return self.proj(features)

    def classify(self, features):
        return self.head(features.mean(dim=(2, 3)))


def make_views(seed=0, b=4, t_labels=None):
    g = torch.Generator().manual_seed(seed)
    student, teacher = TinyNet(C_S), TinyNet(C_T)
    labels = torch.arange(b) % K
    s_img, t_img = torch.randn(b, 3, 16, 16, generator=g), torch.randn(b, 3, 16, 16, generator=g)
    s_feat = student.forward_features(s_img)
    with torch.no_grad():
        t_raw = teacher.forward_features(t_img)
    t_feat = t_raw.detach().requires_grad_()
    t_labels = labels if t_labels is None else t_labels
    return (student, teacher, Views(s_img, s_feat, student.classify(s_feat), labels),
            Views(t_img, t_feat, teacher.classify(t_feat), t_labels))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_finite_named_losses(method):
    torch.manual_seed(0)
    student, _, s, t = make_views()
    cfg = config(method=method, pairing="true" if method == "add" else "random")
    distiller = build_distiller(cfg, K, C_S, C_T)
    out = distiller(s, t, student)
    assert set(out) == set(METHODS[method][0])
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    expected = set()
    if "pro" in out:
        expected |= {"pro_sim_pos", "pro_sim_neg"}
    if "den" in out:
        expected |= {"lesion_wli", "lesion_nbi", "ambiguous", "den_coverage"}
    assert set(distiller.diagnostics) == expected
    for name, v in distiller.diagnostics.items():
        assert (-1 <= v.item() <= 1) if name.startswith("pro_") else (0 <= v.item() <= 1)


@pytest.mark.parametrize("level", ["group", "image"])
def test_gradients_reach_student_and_projection_not_teacher(level):
    torch.manual_seed(1)
    student, teacher, s, t = make_views()
    distiller = build_distiller(config(level=level, set_classifier=True), K, C_S, C_T)
    out = distiller(s, t, student)
    s.features.retain_grad()
    (sum(out.values()) + nn.functional.cross_entropy(s.logits, s.labels)).backward()
    assert student.proj.weight.grad.abs().sum() > 0           # student embed
    assert student.body[0].weight.grad.abs().sum() > 0        # student backbone
    assert distiller.teacher_proj.weight.grad.abs().sum() > 0
    assert distiller.pro.qformer.queries.grad.abs().sum() > 0
    assert distiller.den.w_q.weight.grad.abs().sum() > 0
    assert t.features.grad is None                            # nothing flows past the detach
    assert all(p.grad is None for p in teacher.parameters())


def test_group_and_image_levels_shape_the_prototypes():
    torch.manual_seed(2)
    student, _, s, t = make_views(b=6)
    for level, n_sets in (("group", 2 * K), ("image", 2 * 6)):
        distiller = build_distiller(config(level=level), K, C_S, C_T)
        groups = make_groups(level, s.labels, t.labels)
        s_emb = student.embed(s.features)
        protos, *_ = distiller.pro.prototypes(
            s_emb, distiller.teacher_proj(t.features.detach()), groups)
        assert protos.shape == (n_sets, 4, D)
        assert len(groups) == n_sets // 2
        tokens_per_group = 3 * 4 * 4 if level == "group" else 4 * 4     # 3 images per class, 4x4 map
        assert max(len(ix) for ix in groups.student) * 16 == tokens_per_group


def test_add_is_image_level_and_needs_true_pairs():
    distiller = build_distiller(config(method="add", pairing="true", level="group"), K, C_S, C_T)
    assert distiller.level == "image" and distiller.losses == ("den",)
    with pytest.raises(ValueError, match="pairing: true"):
        build_distiller(config(method="add", pairing="random"), K, C_S, C_T)


def test_image_level_rejects_mismatched_couples():
    student, _, s, t = make_views(t_labels=torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="same-class couples"):
        build_distiller(config(level="image"), K, C_S, C_T)(s, t, student)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="unknown distillation method"):
        build_distiller(config(method="pkd"), K, C_S, C_T)
    student, _, s, t = make_views(t_labels=torch.tensor([0, 1, 0, 5]))
    with pytest.raises(ValueError, match=r"teacher labels must lie in \[0, 2\)"):
        build_distiller(config(), K, C_S, C_T)(s, t, student)
    with pytest.raises(ValueError, match="embed_dim"):
        student, _, s, t = make_views()
        build_distiller(config(embed_dim=32, heads=2), K, C_S, C_T)(s, t, student)


def test_group_level_handles_unequal_modalities():
    torch.manual_seed(3)
    student, _, s, t = make_views(b=4)
    keep = torch.tensor([0, 1, 3])            # teacher has 2 images of class 1, 1 of class 0
    t = Views(t.images[keep], t.features[keep].detach().requires_grad_(), None, t.labels[keep])
    t.logits = TinyNet(C_T).classify(t.features)
    out = build_distiller(config(), K, C_S, C_T)(s, t, student)
    assert all(torch.isfinite(v) for v in out.values())


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    def run():
        torch.manual_seed(7)
        student, _, s, t = make_views()
        distiller = build_distiller(config(set_classifier=True), K, C_S, C_T)
        state = torch.get_rng_state()
        out = distiller(s, t, student)
        assert torch.equal(state, torch.get_rng_state())     # no reseeding or sampling inside forward
        return {k: v.item() for k, v in out.items()}
    assert run() == run()


def test_kd_matches_hinton_formula():
    student, _, s, t = make_views()
    out = build_distiller(config(method="kd"), K, C_S, C_T)(s, t, student)
    p_t = torch.softmax(t.logits / 4, 1)
    manual = (p_t * (p_t.log() - torch.log_softmax(s.logits / 4, 1))).sum(1).mean() * 16
    torch.testing.assert_close(out["kd"], manual)


def test_create_graph_cam_changes_nothing_after_discretising():
    # [C] builds the student CAM with create_graph=True; thresholds kill that gradient, so it is
    # off by default. Same losses, same gradients either way.
    results = []
    for create in (False, True):
        torch.manual_seed(4)
        student, _, s, t = make_views(seed=4)
        distiller = build_distiller(config(method="den", cam_create_graph=create), K, C_S, C_T)
        loss = distiller(s, t, student)["den"]
        loss.backward()
        assert student.head.weight.grad is None   # the CAM labels carry no gradient to the head
        grads = [p.grad.flatten() for p in (*student.body.parameters(), *student.proj.parameters())]
        results.append((loss.detach(), torch.cat(grads)))
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("detach", [True, False])
def test_den_teacher_stop_gradient_option(detach):
    torch.manual_seed(6)
    student, _, s, t = make_views()
    distiller = build_distiller(config(method="den", den_detach_teacher=detach), K, C_S, C_T)
    assert distiller.teacher_proj.weight.requires_grad is not detach   # den alone: fixed projection
    distiller(s, t, student)["den"].backward()
    got = distiller.teacher_proj.weight.grad
    assert (got is None) if detach else (got.abs().sum() > 0)
    assert student.proj.weight.grad.abs().sum() > 0


def test_class_shift_groups_wli_class_c_with_nbi_class_c_plus_one():
    s_lab, t_lab = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0])
    g = make_groups("group", s_lab, t_lab, class_shift=1, num_classes=3)
    assert g.classes.tolist() == [0, 1, 2]
    for c in range(3):
        assert (s_lab[g.student[c]] == c).all() and (t_lab[g.teacher[c]] == (c + 1) % 3).all()
    aligned = make_groups("group", s_lab, t_lab, class_shift=3, num_classes=3)  # a full turn = aligned
    assert all((t_lab[aligned.teacher[c]] == c).all() for c in range(3))
    with pytest.raises(ValueError, match="group"):
        make_groups("image", s_lab, s_lab, class_shift=1, num_classes=3)


def test_class_shifted_teacher_changes_the_loss_and_is_described():
    torch.manual_seed(0)
    student, _, s, t = make_views(b=6)
    plain = build_distiller(config(), K, C_S, C_T)
    torch.manual_seed(0)
    shifted = build_distiller(config(teacher_class_shift=1), K, C_S, C_T)
    assert shifted.describe()["teacher_class_shift"] == 1 and plain.describe()["par_placement"] == "image"
    a, b = plain(s, t, student), shifted(s, t, student)
    assert not torch.isclose(a["pro"], b["pro"])


@pytest.mark.parametrize("backbone,stride,grid", [("resnet10t", 8, 12), ("resnet10t_w50", 16, 6)])
def test_dense_distillation_on_a_finer_student_map(backbone, stride, grid):
    # output_stride 8/16 (timm dilation) gives the dense loss >= 6x6 maps at 96 px.
    from pagkd_core.models import build_model
    from pagkd_core.train import StudentObjective

    torch.manual_seed(0)
    student = build_model(backbone, 2, D, output_stride=stride)
    teacher = build_model("resnet10t", 2, D)
    x = torch.randn(4, 3, 96, 96)
    assert student.forward_features(x).shape[-2:] == (grid, grid)
    distiller = build_distiller(config(par_iters=2, par_dilations=(1, 2, 4, 8)), 2, student.channels,
                                teacher.channels)
    losses = StudentObjective(student, teacher, distiller).train()(x, torch.randn(4, 3, 96, 96),
                                                                    torch.tensor([0, 1, 0, 1]), True)
    assert torch.isfinite(losses["den"]) and 0 < distiller.diagnostics["den_coverage"] <= 1
    losses["den"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.backbone.parameters())
