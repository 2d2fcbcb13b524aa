from __future__ import annotations

import pytest
import torch

from vlmlab.tta.zero import last_resort_winner, zero_vote


def test_zero_equals_a_plain_majority_vote_without_ties():
    g = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(20):
        logits = torch.randn(64, 5, generator=g)
        ent = -(logits.mul(10).softmax(1) * logits.mul(10).log_softmax(1)).sum(1)
        kept = logits[ent.argsort()[:19]].argmax(1)
        counts = torch.bincount(kept, minlength=5)
        votes = zero_vote(logits, scale=10.0, gamma=0.3)
        if (counts == counts.max()).sum() == 1:                      # no tie: ZERO is the majority vote
            assert torch.equal(votes, counts.float()) and int(votes.argmax()) == int(counts.argmax())
            checked += 1
    assert checked >= 5


def _tied_views(later):
    """Views 0-1 vote class 0 and views 2-3 class 1 (a 2-2 tie among the k = 4 kept); then ``later``."""
    confident = torch.tensor([[8.0, 0, 0], [8.0, 0, 0], [0, 8.0, 0], [0, 8.0, 0]])
    return torch.cat([confident, torch.tensor(later)])


def test_ties_go_to_the_most_confident_discarded_view_voting_for_a_tied_class():
    # view 4 votes tied class 0 with a small margin, view 5 votes tied class 1 confidently: the
    # reference walks the discarded views in confidence order (view 5 first), not in their original order
    later = [[0.2, 0.0, 0.0], [0.0, 3.0, 0.0]] + [[0, 0, 0.5]] * 4
    votes = zero_vote(_tied_views(later), scale=1.0, gamma=0.4, vote_dtype="float32")
    assert votes.tolist() == [2.0, 3.0, 0.0]


def test_without_a_discarded_vote_the_best_tied_logit_of_the_most_confident_discarded_view_wins():
    # every discarded view votes class 2; the most confident one (view 5) prefers class 0 among the tied,
    # the first in original order (view 4) would prefer class 1
    later = [[0.1, 0.3, 0.5], [0.6, 0.0, 2.0]] + [[0, 0, 0.5]] * 4
    for rule in ("reference", "tied"):         # C = 3, ties {0, 1}: the reference masks classes 2 and 1
        votes = zero_vote(_tied_views(later), scale=1.0, gamma=0.4, vote_dtype="float32", last_resort=rule)
        assert votes.tolist() == [3.0, 2.0, 0.0]


def _tied_views5(later):
    """Five classes; views 0-1 vote class 0, views 2-3 class 1 (a 2-2 tie among the k = 4 kept); then ``later``."""
    confident = torch.zeros(4, 5)
    confident[:2, 0] = confident[2:, 1] = 8.0
    return torch.cat([confident, torch.tensor(later)])


def test_the_reference_last_resort_masks_classes_counted_from_the_end_and_can_pick_an_untied_class():
    # no discarded view votes class 0 or 1; the most confident one (view 5) has its top logit on class 2.
    # The reference's logit[~ties] masks classes ~0 = -1 -> 4 and ~1 = -2 -> 3, so class 2 stays eligible
    later = [[0.1, 0.0, 0.5, 0.0, 0.0], [0.6, 0.1, 2.0, 0.0, 0.0]] + [[0, 0, 0.5, 0, 0]] * 4
    ref = zero_vote(_tied_views5(later), scale=1.0, gamma=0.4, vote_dtype="float32", last_resort="reference")
    tied = zero_vote(_tied_views5(later), scale=1.0, gamma=0.4, vote_dtype="float32", last_resort="tied")
    assert ref.tolist() == [2.0, 2.0, 1.0, 0.0, 0.0]
    assert tied.tolist() == [3.0, 2.0, 0.0, 0.0, 0.0]


def test_last_resort_winner_against_a_literal_reading_of_the_reference():
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        c = int(torch.randint(2, 9, (1,), generator=g))
        logit = torch.randn(c, generator=g)
        ties = sorted(torch.randperm(c, generator=g)[:int(torch.randint(2, c + 1, (1,), generator=g))].tolist())
        ref = logit.clone()
        ref[~torch.tensor(ties, dtype=torch.int)] = -torch.inf       # break_sample_tie, as written
        assert last_resort_winner(logit, ties, "reference") == int(ref.argmax())
        assert last_resort_winner(logit, ties, "tied") == max(ties, key=lambda t: float(logit[t]))
    with pytest.raises(ValueError, match="last_resort"):
        zero_vote(torch.randn(8, 3), 1.0, 0.5, last_resort="best")


def test_votes_are_one_per_kept_view_in_float32():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))
    votes = zero_vote(logits, 100.0, 0.3, vote_dtype="float32")
    assert votes.dtype == torch.float32 and float(votes.sum()) in (19.0, 20.0)
    assert torch.equal(votes.floor(), votes)                                       # whole votes only


def test_the_reference_fp16_vote_splits_near_equal_logits():
    # 0.3000 vs 0.3005: in fp16 they differ by about half of fp16's eps (9.8e-4), so the vote splits
    logits = torch.tensor([[0.3000, 0.3005, -1.0]] + [[0.0, 0.0, 0.0]] * 9)             # fillers: uniform, discarded
    soft = zero_vote(logits, scale=1.0, gamma=0.1, vote_dtype="float16")        # k = 1: view 0 alone
    hard = zero_vote(logits, scale=1.0, gamma=0.1, vote_dtype="float32")
    assert 0.2 < float(soft[0]) < 0.5 and 0.5 < float(soft[1]) < 0.8 and float(soft.sum()) == pytest.approx(1.0)
    assert hard.tolist() == [0.0, 1.0, 0.0]


def _kept(ent: torch.Tensor, gamma: float) -> set:
    return set(torch.argsort(ent, stable=True)[:int(len(ent) * gamma)].tolist())


def _reference_zero_fp16(logits: torch.Tensor, scale: float, gamma: float) -> tuple[torch.Tensor, set]:
    """``ttas/zero.py`` as fp16 autocast runs it, written out: l fp16, ``temp = 1 / logit_scale.exp()`` a 0-dim
    fp32 tensor, so ``l / temp`` is fp16; softmax and the entropy (``confidence_filter``) in fp32."""
    l = logits.half()
    p = (l / (1 / torch.tensor(scale, dtype=torch.float32))).float().softmax(1)
    kept = _kept(-(p * p.log()).sum(1), gamma)
    votes = (l[sorted(kept)] / torch.finfo(torch.float16).eps).float().softmax(1).sum(0)
    return votes, kept


def test_the_fp16_filter_ranks_views_on_fp16_scaled_logits_as_the_reference():
    g = torch.Generator().manual_seed(3)
    moved = 0
    for _ in range(60):
        logits = 0.2 + 0.02 * torch.randn(64, 50, generator=g)                        # CLIP-like: s l about 20-25
        votes = zero_vote(logits, scale=100.0, gamma=0.3)
        ref, kept = _reference_zero_fp16(logits, 100.0, 0.3)
        if (ref == ref.max()).sum() == 1:                                               # no tie-break involved
            torch.testing.assert_close(votes, ref, atol=1e-4, rtol=0)
        l = logits.half().float().mul(100)                                              # the old filter: fp32 s l
        moved += _kept(-(l.softmax(1) * l.log_softmax(1)).sum(1), 0.3) != kept
    assert moved > 0                                                                    # the rounding matters
