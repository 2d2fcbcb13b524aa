"""Prompters: parameter counts (closed forms), untouched regions, identity prompt, registry."""
from __future__ import annotations

import pytest
import torch

from vlmlab.visual_prompts import PROMPTERS, build_prompter, fixed_patch, padding, random_patch


@pytest.mark.parametrize("pad, size", [(30, 224), (8, 64), (1, 5), (3, 6)])
def test_padding_parameter_count_closed_form(pad, size):
    h = w = size
    assert padding(pad, size).n_params == 2 * 3 * pad * (h + w - 2 * pad)


def test_padding_default_matches_the_paper_count():
    assert padding(30, 224).n_params == 69_840  # visual_prompting.md §3


def test_padding_leaves_the_centre_untouched_and_changes_every_border_pixel():
    pad, size = 5, 32
    pr = padding(pad, size, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, size, size)
    delta = pr(x) - x                                                     # (4, 3, S, S)
    centre = delta[..., pad:size - pad, pad:size - pad]
    assert torch.equal(centre, torch.zeros_like(centre))
    border = torch.ones(size, size, dtype=torch.bool)
    border[pad:size - pad, pad:size - pad] = False
    assert (delta[..., border] != 0).all()                                # randn init: nonzero a.s.
    torch.testing.assert_close(delta, pr.prompt().detach().expand_as(delta))  # one prompt for every image


def test_padding_gradient_reaches_only_the_strips():
    pr = padding(2, 8)
    pr(torch.zeros(1, 3, 8, 8)).pow(2).sum().backward()
    for p in pr.parameters():
        torch.testing.assert_close(p.grad, 2 * p.detach())                # d/dv sum (0 + v)^2 = 2v


def test_fixed_patch_sits_top_left():
    pr = fixed_patch(3, 10)
    assert pr.n_params == 3 * 3 * 3
    v = pr.prompt()[0]                                                    # (3, S, S)
    torch.testing.assert_close(v[:, :3, :3], pr.patch[0].detach())
    v[:, :3, :3] = 0
    assert torch.equal(v, torch.zeros_like(v))


@pytest.mark.parametrize("positions, n", [("reference", 2), ("all", 3)])
def test_random_patch_moves_and_covers_exactly_its_positions(positions, n):
    # reference: np.random.choice(S - p) -> corners 0 .. S - p - 1 (never the last); "all": 0 .. S - p
    pr = random_patch(2, 4, generator=torch.Generator().manual_seed(0), positions=positions)
    corners = set()
    for _ in range(200):
        v = pr.prompt()[0]
        top, left = pr.last_corner
        torch.testing.assert_close(v[:, top:top + 2, left:left + 2], pr.patch[0].detach())
        assert int((v != 0).any(0).sum()) == 4
        corners.add(pr.last_corner)
    assert corners == {(r, c) for r in range(n) for c in range(n)}


def test_random_patch_is_reproducible_with_a_seeded_generator():
    a = random_patch(2, 8, generator=torch.Generator().manual_seed(3))
    b = random_patch(2, 8, generator=torch.Generator().manual_seed(3))
    x = torch.zeros(1, 3, 8, 8)
    for _ in range(5):
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", sorted(PROMPTERS))
def test_zero_init_is_the_identity(name):
    pr = build_prompter(name, 4, 16, init="zeros")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(pr(x), x)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="does not fit"):
        padding(40, 64)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        padding(2, 16)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(KeyError, match="known"):
        build_prompter("frame", 2, 16)
