"""LoRA as UniInfo places it: closed forms, identity at init, merged == unmerged, UniInfo's parameter count."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from vlmlab.models import load_clip
from vlmlab.models.embedded import build_embedded
from vlmlab.models.lora import (LoRALinear, LoRAMultiheadAttention, apply_lora, frozen_prefix, lora_parameters,
                                merge_lora, trainable_count)


def _perturb(module: nn.Module, seed: int = 0) -> None:
    """Make every LoRA update non-zero (B starts at zero, so identity tests would pass for nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_clip("ViT-B-16", None, device="cpu").model.visual.eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_embedded("cpu").model.visual.eval()


def test_lora_linear_closed_form():
    torch.manual_seed(1)
    base = nn.Linear(6, 5)
    lora = LoRALinear(base, r=4, alpha=2.0)
    assert lora.scaling == pytest.approx(2.0 / math.sqrt(4))
    x = torch.randn(3, 6)
    torch.testing.assert_close(lora(x), base(x))                    # B = 0: identity
    _perturb(lora)
    expected = x @ (base.weight + 1.0 * lora.lora_B @ lora.lora_A).T + base.bias
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected)


def test_lora_init_follows_uniinfo_loralib():
    lora = LoRALinear(nn.Linear(768, 768), r=16, alpha=2)
    assert lora.scaling == 0.5                                      # alpha / sqrt(r), not alpha / r
    assert torch.count_nonzero(lora.lora_B) == 0
    bound = 1.0 / math.sqrt(768)                                    # kaiming_uniform(a=sqrt 5) on fan_in 768
    assert lora.lora_A.abs().max() <= bound and lora.lora_A.std() > 0.5 * bound / math.sqrt(3)
    assert not lora.weight0.requires_grad and not lora.bias.requires_grad


@pytest.mark.parametrize("batch_first", [True, False])
def test_lora_attention_equals_torch_attention(batch_first):
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    lora = LoRAMultiheadAttention(mha, r=4, alpha=2)
    x = torch.randn(2, 7, 16) if batch_first else torch.randn(7, 2, 16)
    mask = torch.full((7, 7), float("-inf")).triu(1)                # causal, as in the text tower
    for m in (None, mask):
        ref = mha(x, x, x, need_weights=False, attn_mask=m)[0]
        torch.testing.assert_close(lora(x, x, x, need_weights=False, attn_mask=m)[0], ref, atol=1e-5, rtol=1e-5)
    _perturb(lora)
    merged = merge_lora(nn.Sequential(lora))[0]
    assert isinstance(merged, nn.MultiheadAttention)
    torch.testing.assert_close(merged(x, x, x, need_weights=False)[0], lora(x, x, x)[0], atol=1e-5, rtol=1e-5)


def test_vit_b16_count_identity_and_merge(vit):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        frozen = vit(x)
    adapted = copy.deepcopy(vit)
    params = apply_lora(adapted, r=16, alpha=2)
    assert trainable_count(adapted) == sum(p.numel() for p in params) == 1_179_648  # 12 x 4 x 16 x (768 + 768)
    assert all("lora_" in n for n in lora_parameters(adapted))
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), frozen, atol=1e-4, rtol=1e-4)
        _perturb(adapted)
        unmerged = adapted(x)
        assert (unmerged - frozen).abs().max() > 1e-2               # the update now matters...
        merged = merge_lora(copy.deepcopy(adapted))(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)  # ...and folds exactly


def test_resnet_attnpool_placement(resnet):
    adapted = copy.deepcopy(resnet)
    apply_lora(adapted, r=16, alpha=2)
    names = set(lora_parameters(adapted))
    assert names == {f"attnpool.{p}.lora_{ab}" for p in ("q_proj", "k_proj", "v_proj", "c_proj") for ab in "AB"}
    assert trainable_count(adapted) == 3 * 16 * (512 + 512) + 16 * (512 + 128)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), resnet(x), atol=1e-5, rtol=1e-5)
        _perturb(adapted)
        prefix, head = frozen_prefix(adapted)
        torch.testing.assert_close(head(prefix(x)), adapted(x))
        assert prefix(x).shape == (4, 512, 2, 2)
        assert (adapted(x) - resnet(x)).abs().max() > 1e-3
        torch.testing.assert_close(merge_lora(copy.deepcopy(adapted))(x), adapted(x), atol=1e-5, rtol=1e-5)


def test_one_step_changes_only_lora_tensors(resnet):
    adapted = copy.deepcopy(resnet)
    opt = torch.optim.AdamW(apply_lora(adapted), lr=1e-3, weight_decay=0.01)
    before = {n: t.clone() for n, t in adapted.state_dict().items()}
    adapted(torch.randn(4, 3, 64, 64)).pow(2).sum().backward()
    opt.step()
    changed = {n for n, t in adapted.state_dict().items() if not torch.equal(t, before[n])}
    assert changed and all("lora_" in n for n in changed), changed


def test_bn_option_trains_affine_and_disables_the_prefix(resnet):
    adapted = copy.deepcopy(resnet)
    apply_lora(adapted, extra="bn")
    n_bn = sum(m.weight.numel() * 2 for m in adapted.modules() if isinstance(m, nn.BatchNorm2d))
    assert trainable_count(adapted) == 3 * 16 * 1024 + 16 * 640 + n_bn
    prefix, _ = frozen_prefix(adapted)
    x = torch.randn(1, 3, 64, 64)
    assert prefix(x) is x


def test_unsupported_tower_is_named():
    with pytest.raises(TypeError, match="unsupported image tower Linear"):
        apply_lora(nn.Linear(2, 2))


def _two_layers(backward):
    torch.manual_seed(5)
    l1, l2 = LoRALinear(nn.Linear(4, 3), r=2, alpha=2, backward=backward), LoRALinear(nn.Linear(3, 2), r=2, alpha=2,
                                                                                      backward=backward)
    for layer in (l1, l2):
        with torch.no_grad():
            layer.lora_B.normal_()                                  # a non-zero update s B A
    return l1, l2


@pytest.mark.parametrize("backward", ["reference", "exact"])
def test_lora_input_gradient_reference_uses_the_stale_weight(backward):
    """Two layers, L = sum(l2(l1(x))): loralib sends dL/dy1 = 1 W0_2 (not 1 (W0_2 + s B2 A2)) back to layer 1."""
    l1, l2 = _two_layers(backward)
    x = torch.randn(5, 4, requires_grad=True)
    l2(l1(x)).sum().backward()
    w_used = {"reference": (l1.weight0, l2.weight0), "exact": (l1.weight.detach(), l2.weight.detach())}[backward]
    g_y2 = torch.ones(5, 2)
    g_y1 = g_y2 @ w_used[1]                                         # (5, 3)
    torch.testing.assert_close(x.grad, g_y1 @ w_used[0])
    g_delta1 = g_y1.T @ x.detach()                                  # dL/d(s B1 A1) = g_y1^T x, (3, 4)
    torch.testing.assert_close(l1.lora_B.grad, l1.scaling * g_delta1 @ l1.lora_A.detach().T)
    torch.testing.assert_close(l1.lora_A.grad, l1.scaling * l1.lora_B.detach().T @ g_delta1)
    with torch.no_grad():                                           # the forward value is the adapted layer's
        torch.testing.assert_close(l2(l1(x)), (x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias)


def test_reference_and_exact_input_gradients_differ():
    grads = {}
    for backward in ("reference", "exact"):
        l1, l2 = _two_layers(backward)
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
        l2(l1(x)).sum().backward()
        grads[backward] = x.grad
    assert (grads["reference"] - grads["exact"]).abs().max() > 1e-2


def test_unknown_backward_is_named():
    with pytest.raises(ValueError, match="backward 'stale'"):
        LoRALinear(nn.Linear(2, 2), backward="stale")
