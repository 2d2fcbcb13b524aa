from __future__ import annotations

import torch

from vlmlab.tta.zero import zero_vote


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


def test_ties_go_to_the_first_later_view_voting_for_a_tied_class():
    later = [[0, 0, 0.5], [0.1, 0.4, 0]] + [[0.4, 0.1, 0]] * 4      # view 4 votes 2 (not tied), view 5 votes 1
    votes = zero_vote(_tied_views(later), scale=1.0, gamma=0.4)
    assert votes.tolist() == [2.0, 3.0, 0.0]


def test_without_a_later_vote_the_best_tied_logit_of_view_k_wins():
    later = [[0.1, 0.3, 0.5]] + [[0, 0, 0.5]] * 5                     # every later view votes class 2
    votes = zero_vote(_tied_views(later), scale=1.0, gamma=0.4)
    assert int(votes.argmax()) == 1 and votes.tolist() == [2.0, 3.0, 0.0]


def test_votes_are_one_per_kept_view_in_float32():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))
    votes = zero_vote(logits, 100.0, 0.3)
    assert votes.dtype == torch.float32 and float(votes.sum()) in (19.0, 20.0)
