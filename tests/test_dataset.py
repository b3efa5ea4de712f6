"""The training dataset and samplers: shapes, deterministic augmentation, order and sharding."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from epiformer_cli.data.dataset import (
    Augment,
    ShardSampler,
    TrainBatchSampler,
    WindowDataset,
    epoch_order,
)
from epiformer_cli.data.encoding import reverse_complement
from epiformer_cli.data.training_store import TrainingStore
from tests.helpers import WINDOW, make_tiny_store

#: a store small enough to train on in a second: 4,096 bp windows (32 bins of 128 bp).
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TrainingStore:
    return TrainingStore(make_tiny_store(tmp_path_factory.mktemp("tiny")))


def test_item_shapes_and_crop(store):
    ds = WindowDataset(store, "train", crop_bins=4)
    item = ds[0]
    assert item["codes"].dtype == torch.uint8 and item["codes"].shape == (WINDOW,)
    assert item["cons"].dtype == torch.float32 and item["cons"].shape == (WINDOW,)
    assert item["targets"].shape == (2, WINDOW // 128 - 8)
    w = store.windows("train")
    _, _, full = store.read_window(int(w.chrom_index[0]), int(w.start[0]), int(w.end[0]))
    np.testing.assert_array_equal(item["targets"].numpy(), full[:, 4:-4])


def test_augmentation_is_a_pure_function_of_seed_epoch_index():
    aug = Augment(rc_prob=0.5, max_shift=3)
    draws = [aug.draw(7, e, i) for e in range(3) for i in range(50)]
    assert draws == [aug.draw(7, e, i) for e in range(3) for i in range(50)]
    assert {s for _, s in draws} == set(range(-3, 4))
    assert 0.3 < np.mean([r for r, _ in draws]) < 0.7
    assert [aug.draw(7, 0, i) for i in range(50)] != [aug.draw(7, 1, i) for i in range(50)]
    assert [aug.draw(7, 0, i) for i in range(50)] != [aug.draw(8, 0, i) for i in range(50)]


def test_augmented_item_moves_sequence_conservation_and_targets_together(store):
    aug = Augment(rc_prob=0.5, max_shift=3)
    ds = WindowDataset(store, "train", crop_bins=4, augment=aug, seed=3)
    w = store.windows("train")
    seen_reverse = set()
    for epoch in range(4):
        for i in range(len(ds)):
            reverse, shift = aug.draw(3, epoch, i)
            seen_reverse.add(reverse)
            codes, cons, targets = store.read_window(int(w.chrom_index[i]), int(w.start[i]), int(w.end[i]), shift=shift)
            if reverse:
                codes, cons, targets = reverse_complement(codes, cons, targets)
            item = ds[(epoch, i)]
            np.testing.assert_array_equal(item["codes"].numpy(), codes)
            np.testing.assert_array_equal(item["cons"].numpy(), cons)
            np.testing.assert_array_equal(item["targets"].numpy(), targets[:, 4:-4])
    assert seen_reverse == {True, False}


def test_shifted_inputs_are_the_genome_moved_by_the_shift(store):
    w = store.windows("train")
    c, s, e = int(w.chrom_index[3]), int(w.start[3]), int(w.end[3])
    base_codes, base_cons, base_t = store.read_window(c, s, e)
    codes, cons, t = store.read_window(c, s, e, shift=2)
    np.testing.assert_array_equal(codes[:-2], base_codes[2:])
    np.testing.assert_array_equal(cons[:-2], base_cons[2:])
    np.testing.assert_array_equal(t, base_t)


def _flatten(sampler):
    return [item for batch in sampler for item in batch]


def test_sampler_epoch_is_a_permutation_and_depends_on_epoch_only():
    s = TrainBatchSampler(23, batch_size=2, accumulate=2, seed=1)
    assert s.steps_per_epoch == 5 and len(s) == 10
    s.set_epoch(0)
    first = _flatten(s)
    assert len(first) == 20 and len({i for _, i in first}) == 20
    assert all(e == 0 for e, _ in first)
    assert [i for _, i in first] == list(epoch_order(23, 1, 0)[:20])
    s.set_epoch(1)
    assert [i for _, i in _flatten(s)] != [i for _, i in first]


def test_sampler_resumes_mid_epoch():
    s = TrainBatchSampler(40, batch_size=3, accumulate=2, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_step=4)
    assert list(s) == full[4 * 2:]
    assert len(s) == len(full) - 8


def test_ranks_see_the_micro_batches_of_single_process_accumulation():
    single = TrainBatchSampler(37, batch_size=3, accumulate=2, seed=5)
    ranks = [TrainBatchSampler(37, batch_size=3, accumulate=1, rank=r, world_size=2, seed=5) for r in range(2)]
    for s in [single, *ranks]:
        s.set_epoch(1)
    single_batches = list(single)
    rank_batches = [list(s) for s in ranks]
    assert single.steps_per_epoch == ranks[0].steps_per_epoch == 6
    for step in range(6):
        assert single_batches[2 * step] == rank_batches[0][step]
        assert single_batches[2 * step + 1] == rank_batches[1][step]


def test_shard_sampler_covers_every_window_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_do_not_depend_on_worker_count(store, workers):
    from torch.utils.data import DataLoader

    ds = WindowDataset(store, "train", crop_bins=4, augment=Augment(), seed=0)
    sampler = TrainBatchSampler(len(ds), batch_size=4, seed=0)
    sampler.set_epoch(1)
    reference = [ds[item] for batch in sampler for item in batch]
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers)
    got = [b for b in loader]
    assert sum(len(b["index"]) for b in got) == len(reference)
    flat = 0
    for batch in got:
        for j in range(len(batch["index"])):
            ref = reference[flat]
            for key in ("codes", "cons", "targets", "index"):
                assert torch.equal(batch[key][j], ref[key])
            flat += 1
