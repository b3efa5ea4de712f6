import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epiformer_cli.data.encoding import (
    decode_sequence,
    encode_sequence,
    input_channels,
    model_inputs,
    one_hot,
    reverse_complement,
)
from tests.helpers import float_tolerance


def test_codes_are_fixed_and_case_insensitive():
    assert encode_sequence("ACGTNacgtn").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    # IUPAC ambiguity codes and anything else become N
    assert encode_sequence("RYKMSWBDHV-").tolist() == [4] * 11
    assert decode_sequence(encode_sequence("acgTN")) == "ACGTN"


def test_reverse_complement_of_text():
    codes = encode_sequence("AACGTN")
    rc, _, _ = reverse_complement(codes)
    assert decode_sequence(rc) == "NACGTT"


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="ACGTN", min_size=1, max_size=300), st.integers(1, 3))
def test_reverse_complement_round_trip_numpy_and_torch(seq, tracks):
    codes = encode_sequence(seq)
    cons = np.arange(len(seq), dtype=np.float32)
    targets = np.arange(tracks * len(seq), dtype=np.float32).reshape(tracks, len(seq))
    rc = reverse_complement(codes, cons, targets)
    back = reverse_complement(*rc)
    np.testing.assert_array_equal(back[0], codes)
    np.testing.assert_array_equal(back[1], cons)
    np.testing.assert_array_equal(back[2], targets)
    # the same function on torch tensors agrees with numpy
    t_rc = reverse_complement(torch.as_tensor(codes), torch.as_tensor(cons), torch.as_tensor(targets))
    for a, b in zip(rc, t_rc):
        np.testing.assert_array_equal(a, b.numpy())


def test_reverse_complement_moves_conservation_and_bins_with_the_sequence():
    codes = encode_sequence("AAAACCCC")  # 2 bins of 4 bp
    cons = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float32)
    targets = np.array([[10.0, 20.0]])
    rc_codes, rc_cons, rc_targets = reverse_complement(codes, cons, targets)
    assert decode_sequence(rc_codes) == "GGGGTTTT"
    # the conserved C block is now first, and so is its bin
    assert rc_cons.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert rc_targets.tolist() == [[20.0, 10.0]]


def test_reverse_complement_arrays_have_positive_strides():
    for n in (1, 2, 7):
        rc, cons, _ = reverse_complement(encode_sequence("A" * n), np.zeros(n, dtype=np.float32))
        assert torch.from_numpy(rc).shape == (n,) and torch.from_numpy(cons).shape == (n,)


def test_one_hot_and_model_inputs():
    codes = torch.as_tensor(encode_sequence("ACGTN"))[None]
    x = one_hot(codes)
    assert x.shape == (1, 4, 5)
    assert x[0].T.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    cons = torch.tensor([[0.0, 0.5, 1.0, 0.0, 0.2]])
    assert input_channels("channel") == 5 and input_channels("scale") == 4
    chan = model_inputs(codes, cons, "channel")
    assert chan.shape == (1, 5, 5)
    assert torch.equal(chan[0, 4], cons[0])
    scaled = model_inputs(codes, cons, "scale")
    assert scaled.shape == (1, 4, 5)
    # float32 exp is within one ulp on every CPU's kernel (SLEEF u10, glibc): one rounding's bound
    assert scaled[0, 1, 1].item() == pytest.approx(np.exp(0.5), rel=0, abs=float_tolerance(np.exp(0.5)))
    assert scaled[0, :, 4].sum().item() == 0  # N stays all-zero whatever its conservation
    with pytest.raises(ValueError):
        model_inputs(codes, cons, "bogus")
