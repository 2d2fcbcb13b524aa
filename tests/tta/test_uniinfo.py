from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlmlab.tta import build, run_stream
from vlmlab.tta.base import Batch, Context, encode_single
from vlmlab.tta.uniinfo import ema_update, mi_weight, scaled_threshold

from tta_helpers import CLASSNAMES


def _uniinfo(bundle, text, **kw):
    m = build("uniinfo", batch_size=3, **kw)
    m.setup(Context(bundle, CLASSNAMES, text))
    m.reset()
    return m


def _batch(toy_stream, idx):
    idx = torch.as_tensor(idx)
    return Batch(idx, images=toy_stream.images(idx))


def test_starts_equal_to_the_frozen_model(bundle, text, toy_stream):
    m = _uniinfo(bundle, text)
    b = _batch(toy_stream, [0, 1, 2])
    frozen = encode_single(bundle, b.images) @ text.T / 0.01
    torch.testing.assert_close(m.predict(b), frozen, atol=1e-3, rtol=1e-4)   # online logits: before the step


def test_one_step_changes_only_lora_tensors_and_the_teacher_follows_the_ema(bundle, text, toy_stream):
    m = _uniinfo(bundle, text, ema_momentum=0.25)
    student0 = {k: v.clone() for k, v in m.student.state_dict().items()}
    teacher0 = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    m.predict(_batch(toy_stream, [0, 1, 2]))
    s1, t1 = m.student.state_dict(), m.teacher.state_dict()
    changed = {k for k in s1 if not torch.equal(s1[k], student0[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any(k.endswith("lora_B") for k in changed)             # B leaves zero after one step
    for k in t1:
        expected = 0.75 * teacher0[k] + 0.25 * s1[k] if "lora_" in k else teacher0[k]
        torch.testing.assert_close(t1[k], expected)


def test_ema_update_formula():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a.weight.requires_grad_(False)                                # only trainable tensors move
    before = {k: v.clone() for k, v in b.state_dict().items()}
    ema_update(b, a, 0.1)
    torch.testing.assert_close(b.bias, 0.9 * before["bias"] + 0.1 * a.bias)
    torch.testing.assert_close(b.weight, before["weight"])


def test_mi_weight_formula():
    p = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    h = lambda q: -(q * q.clamp_min(1e-30).log()).sum(-1)        # noqa: E731
    mi = h(p.mean(0)) - h(p).mean()
    assert float(mi_weight(p, 1.3)) == pytest.approx(math.exp(float(mi) - 1.3), rel=1e-6)
    assert not mi_weight(p.requires_grad_(), 1.3).requires_grad


def test_loss_matches_the_reference_formulas(bundle, text):
    m = _uniinfo(bundle, text, info_threshold=0.5, info_threshold_classes=None)
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(5, text.shape[1], generator=g), dim=-1)
    zt = F.normalize(torch.randn(5, text.shape[1], generator=g), dim=-1)
    out = m.losses(z, zt)
    # util/loss.py of kzkadc/uninfo, written out: uniformity from z z^T with the diagonal, var = 1
    zz = z @ z.T
    dist = zz.diag()[None] + zz.diag()[:, None] - 2 * zz
    unif = torch.exp(-0.5 * dist).mean().log()
    s = z @ text.T / 0.01
    ent = -(s.softmax(1) * s.log_softmax(1)).sum(1).mean()
    pm = s.softmax(1).mean(0)
    w = torch.exp(-(pm * pm.log()).sum() - ent - 0.5)
    ce = F.cross_entropy(s, (zt @ text.T / 0.01).softmax(1))
    torch.testing.assert_close(out["loss"], w * ent + unif / w + ce, atol=1e-5, rtol=1e-5)


def test_threshold_scales_with_log_classes():
    assert scaled_threshold(3.0, 1000, 1000) == pytest.approx(3.0)
    assert scaled_threshold(3.0, 20, 1000) == pytest.approx(3.0 * math.log(20) / math.log(1000))
    assert scaled_threshold(2.0, 20, None) == 2.0


def test_the_default_threshold_is_i0_as_given_whatever_the_class_count(bundle, text):
    assert len(CLASSNAMES) != 1000
    assert _uniinfo(bundle, text).threshold == 3.0                          # official: info_weight_th, fixed
    scaled = _uniinfo(bundle, text, info_threshold_classes=1000).threshold   # vlmlab's optional rule
    assert scaled == pytest.approx(3.0 * math.log(len(CLASSNAMES)) / math.log(1000))


def test_a_teacher_that_never_moves_reads_out_the_frozen_model(bundle, text, toy_stream):
    m = build("uniinfo", batch_size=3, ema_momentum=0.0, lr=1e-2)
    m.setup(Context(bundle, CLASSNAMES, text))
    out = run_stream(m, toy_stream, seed=0)                       # shuffled stream, second pass in order
    feats = encode_single(bundle, toy_stream.images(torch.arange(6)))
    torch.testing.assert_close(out, feats @ text.T / 0.01, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(m.embeddings, feats, atol=1e-5, rtol=1e-5)   # (N, D), dataset order
    assert len(m.history) == 2 and m.history[-1]["w"] > 0


def test_readout_is_validated():
    with pytest.raises(ValueError, match="readout='last'"):
        build("uniinfo", readout="last")


def _bn_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k or "num_batches" in k}


def test_train_mode_normalises_the_students_batch_by_its_own_statistics(bundle, text, toy_stream):
    # the official step: net.train() for the student's forward, the teacher in eval(); LoRA B = 0 at the
    # start, so the first online logits are the frozen tower's in train mode (batch statistics)
    import copy
    b = _batch(toy_stream, [0, 1, 2])
    m = _uniinfo(bundle, text, train_mode=True, lora_extra="bn")
    bn_student, bn_teacher = _bn_buffers(m.student), _bn_buffers(m.teacher)
    assert bn_student                                                      # the embedded tower has BatchNorm
    reference = copy.deepcopy(bundle.model.visual).train()
    with torch.no_grad():
        expected = F.normalize(reference(b.images).float(), dim=-1) @ text.T / 0.01
    torch.testing.assert_close(m.predict(b), expected, atol=1e-3, rtol=1e-4)
    frozen = encode_single(bundle, b.images) @ text.T / 0.01
    assert not torch.allclose(expected, frozen, atol=1e-2)                 # the mode matters on this tower
    moved = _bn_buffers(m.student)
    assert all(torch.equal(moved[k], reference.state_dict()[k]) for k in moved)   # running stats updated once
    assert any(not torch.equal(moved[k], bn_student[k]) for k in moved)
    assert all(torch.equal(v, bn_teacher[k]) for k, v in _bn_buffers(m.teacher).items())  # teacher: pretrained
    assert not m.student.training and not m.teacher.training


def test_eval_mode_keeps_the_running_statistics(bundle, text, toy_stream):
    m = _uniinfo(bundle, text, lora_extra="bn")
    before = _bn_buffers(m.student)
    m.predict(_batch(toy_stream, [0, 1, 2]))
    assert all(torch.equal(v, before[k]) for k, v in _bn_buffers(m.student).items())
