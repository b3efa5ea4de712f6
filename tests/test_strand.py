"""The strand view (:class:`epiformer_cli.inference.strand.View`): its inputs, its mirrored edits
and its outputs, checked against oracles written from the rule (text reverse complements, edits
applied to plain arrays), exactly, on integer codes with N bases. Then the engine's averaging over
views, the one every command uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epiformer_cli.data.encoding import decode_sequence, encode_sequence, one_hot
from epiformer_cli.inference.engine import InferenceEngine
from epiformer_cli.inference.strand import View
from tests.helpers import random_model

TEXT_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
codes_st = st.lists(st.integers(0, 4), min_size=1, max_size=40).map(lambda v: np.array(v, dtype=np.uint8))


def edited(codes: np.ndarray, offset: int, width: int, alt: np.ndarray) -> np.ndarray:
    """The oracle of an edit: bases ``[offset, offset + width)`` replaced by ``alt``."""
    return np.concatenate([codes[..., :offset], alt, codes[..., offset + width:]], axis=-1)


def rows(n: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5, (n, length), dtype=np.uint8), rng.random((n, length), dtype=np.float32)


# ---- inputs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_reverse_view_of_the_reverse_view_is_the_window(backend):
    codes, cons = rows(3, 37)
    if backend == "torch":
        codes, cons = torch.from_numpy(codes), torch.from_numpy(cons)
    rev = View(0, True)
    twice = rev.inputs(*rev.inputs(codes, cons))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(twice, (codes, cons)))
    # the forward view changes nothing (and copies nothing)
    fwd_codes, fwd_cons = View().inputs(codes, cons)
    assert fwd_codes is codes and fwd_cons is cons


@settings(max_examples=60, deadline=None)
@given(codes_st)
def test_reverse_view_is_the_text_reverse_complement(codes):
    cons = np.arange(len(codes), dtype=np.float32)
    rc_codes, rc_cons = View(0, True).inputs(codes, cons)
    assert decode_sequence(rc_codes) == decode_sequence(codes).translate(TEXT_COMPLEMENT)[::-1]
    np.testing.assert_array_equal(rc_cons, cons[::-1])  # conservation travels with its base
    assert View(0, True).inputs(codes)[1] is None


def test_shifted_views_take_the_right_slice():
    length, context = 20, 3
    codes, cons = rows(2, length + 2 * context, seed=1)
    for shift in range(-context, context + 1):
        window = codes[:, context + shift: context + shift + length]
        got_codes, got_cons = View(shift, False).inputs(codes, cons, context=context)
        np.testing.assert_array_equal(got_codes, window)
        np.testing.assert_array_equal(got_cons, cons[:, context + shift: context + shift + length])
        rc_codes, rc_cons = View(shift, True).inputs(codes, cons, context=context, length=length)
        for r in range(2):
            text = decode_sequence(window[r]).translate(TEXT_COMPLEMENT)[::-1]
            np.testing.assert_array_equal(rc_codes[r], encode_sequence(text))
        np.testing.assert_array_equal(rc_cons, got_cons[:, ::-1])
    with pytest.raises(ValueError, match="context"):
        View(4, False).inputs(codes, cons, context=context)


@pytest.mark.parametrize("view", [View(0, False), View(0, True), View(-2, False), View(2, True)])
def test_one_hot_view_equals_the_one_hot_of_the_codes_view(view):
    """The gradient explainer's view of a one-hot input is the one-hot of the codes' view
    (complement = channel order reversed; N stays all zero)."""
    codes, cons = rows(2, 24, seed=2)
    v_codes, v_cons = view.inputs(codes, cons, context=2)
    x, c = view.one_hot(one_hot(torch.from_numpy(codes)), torch.from_numpy(cons), context=2)
    assert torch.equal(x, one_hot(torch.from_numpy(np.ascontiguousarray(v_codes))))
    np.testing.assert_array_equal(c.numpy(), v_cons)


# ---- edits ----------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(codes_st, st.data())
def test_a_mirrored_edit_commutes_with_the_reverse_complement(codes, data):
    """Editing then reverse-complementing equals reverse-complementing then making the mirrored
    edit: substitutions (len(alt) == width) and indel windows alike, exactly."""
    length = len(codes)
    offset = data.draw(st.integers(0, length), label="offset")
    width = data.draw(st.integers(0, length - offset), label="width")
    alt = np.array(data.draw(st.lists(st.integers(0, 4), max_size=6), label="alt"), dtype=np.uint8)
    rev = View(0, True)
    m_offset, m_alt = rev.mirror(offset, width, alt, length)
    np.testing.assert_array_equal(rev.inputs(edited(codes, offset, width, alt))[0],
                                  edited(rev.inputs(codes)[0], m_offset, width, m_alt))
    assert View().mirror(offset, width, alt, length) == (offset, alt)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_substitution_mirrors_into_every_shifted_view(data):
    length, context = 16, 3
    row = np.array(data.draw(st.lists(st.integers(0, 4), min_size=length + 2 * context,
                                      max_size=length + 2 * context)), dtype=np.uint8)
    view = View(data.draw(st.integers(-context, context)), data.draw(st.booleans()))
    width = data.draw(st.integers(1, 4))
    # an edit inside the view's window (window offsets; the row holds the context on each side)
    offset = data.draw(st.integers(max(0, view.shift), min(length, length + view.shift) - width))
    alt = np.array(data.draw(st.lists(st.integers(0, 3), min_size=width, max_size=width)), dtype=np.uint8)
    m_offset, m_alt = view.mirror(offset, width, alt, length)
    np.testing.assert_array_equal(view.inputs(edited(row, context + offset, width, alt), context=context)[0],
                                  edited(view.inputs(row, context=context)[0], m_offset, width, m_alt))


def test_many_edits_of_one_width_mirror_at_once():
    """Offsets as an array and ALTs as (edits, width) codes, as the variant fast path passes them."""
    offsets = np.array([0, 5, 17], dtype=np.int64)
    alts = np.array([[0, 1, 4], [2, 2, 3], [3, 0, 1]], dtype=np.uint8)
    for view in (View(0, True), View(2, True), View(-1, False)):
        many_offsets, many_alts = view.mirror(offsets, 3, alts, 20)
        for i in range(3):
            one_offset, one_alt = view.mirror(int(offsets[i]), 3, alts[i], 20)
            assert many_offsets[i] == one_offset
            np.testing.assert_array_equal(many_alts[i], one_alt)


# ---- outputs --------------------------------------------------------------------------------------
def test_outputs_back_reverse_the_bins_of_a_reverse_view_only():
    y = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    np.testing.assert_array_equal(View(0, True).outputs_back(y), y[:, :, ::-1])
    assert torch.equal(View(3, True).outputs_back(torch.from_numpy(y)), torch.from_numpy(y).flip(-1))
    assert View(0, False).outputs_back(y) is y and View(-3, False).outputs_back(y) is y  # shifts move no bin
    # a reverse view's prediction of the reverse-complemented input maps back onto forward bins
    back = View(0, True).outputs_back(View(0, True).outputs_back(y))
    np.testing.assert_array_equal(back, y)


def test_average_views_maps_every_view_back_and_keeps_the_track_order():
    model = random_model()
    engine = InferenceEngine(model, device="cpu", rc_average=True, shifts=(0, 3))
    bins = torch.arange(model.config.out_bins, dtype=torch.float32)

    def predict_view(view):
        # what a model that predicts each bin's forward index would give on the view's input
        y = bins.expand(1, model.config.n_tracks, -1) + torch.arange(model.config.n_tracks)[None, :, None] * 100
        return y.flip(-1) if view.reverse else y.clone()

    assert torch.equal(engine.average_views(predict_view), predict_view(View()))
    # --tracks b,a on a two-track model: every track, reordered, is picked in the order given
    codes, cons = rows(2, model.config.seq_len, seed=3)
    both = InferenceEngine(model, device="cpu").predict(codes, cons)
    swapped = InferenceEngine(model, device="cpu", tracks=[1, 0]).predict(codes, cons)
    np.testing.assert_array_equal(swapped, both[:, ::-1])
