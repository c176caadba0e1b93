import pytest
import torch

from toyloops import (
    BatchIterator,
    PointsDataModule,
    SequenceDataModule,
    make_blobs,
    make_circles,
    make_sequences,
    split_indices,
    standardize,
)


@pytest.mark.parametrize(
    "make", [make_blobs, make_circles, lambda seed: make_sequences("majority", seed=seed)]
)
def test_generators_are_pure_functions_of_the_seed(make):
    x1, y1 = make(seed=3)
    x2, y2 = make(seed=3)
    x3, _ = make(seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_blobs_have_the_seed_000_means_and_variance():
    x, y = make_blobs(n_per_class=20000, seed=0)
    assert x.dtype == torch.float32 and y.tolist().count(1) == 20000
    for label, mean in enumerate([(-1.5, -1.0), (1.2, 1.3)]):
        xs = x[y == label]
        assert torch.allclose(xs.mean(0), torch.tensor(mean), atol=0.02)
        assert torch.allclose(xs.var(0), torch.tensor([0.5, 0.5]), atol=0.02)


def test_blobs_allow_more_than_two_classes():
    x, y = make_blobs(10, centers=[[0, 0, 0], [5, 5, 5], [9, 9, 9]], seed=1)
    assert x.shape == (30, 3) and y.unique().tolist() == [0, 1, 2]


def test_circles_label_is_radius_squared_above_one_and_noise_flips_that_fraction():
    x, y = make_circles(5000, seed=0)
    assert torch.equal(y, (x.pow(2).sum(1) > 1).long())
    xn, yn = make_circles(5000, noise=0.1, seed=0)
    flipped = (yn != (xn.pow(2).sum(1) > 1).long()).float().mean().item()
    assert 0.08 < flipped < 0.12


def test_sequence_tasks_labels_follow_their_rules():
    tokens, y = make_sequences("parity", n_samples=500, seq_len=7, vocab_size=11, seed=0)
    assert tokens.min() >= 1 and tokens.max() <= 10 and tokens.shape == (500, 7)
    assert torch.equal(y, tokens.sum(1) % 2)
    tokens, y = make_sequences("majority", n_samples=500, seq_len=7, vocab_size=11, seed=0)
    assert torch.equal(y, ((tokens < 5.5).sum(1) > 3.5).long())
    tokens, y = make_sequences("contains", n_samples=500, seq_len=7, vocab_size=11, target_token=4, seed=0)
    assert torch.equal(y, (tokens == 4).any(1).long())
    assert 0.2 < y.float().mean() < 0.8


def test_split_is_disjoint_complete_and_seeded():
    train, val, test = split_indices(1000, 0.2, 0.1, seed=5)
    assert (len(train), len(val), len(test)) == (700, 200, 100)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(1000))
    assert torch.equal(split_indices(1000, 0.2, 0.1, seed=5)[1], val)
    assert not torch.equal(split_indices(1000, 0.2, 0.1, seed=6)[1], val)


def test_a_zero_test_fraction_leaves_no_test_split():
    train, val, test = split_indices(1000, 0.2, 0.0, seed=5)
    assert (len(train), len(val), len(test)) == (800, 200, 0)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (1.0, 0.1), (0.6, 0.4), (0.2, -0.1)])
def test_split_rejects_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        split_indices(100, val, test)


def test_standardize_uses_the_train_split_only():
    train, other = torch.randn(500, 2) * 3 + 1, torch.randn(100, 2) + 10
    train_s, other_s = standardize(train, other)
    assert torch.allclose(train_s.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(train_s.std(0), torch.ones(2), atol=1e-4)
    assert torch.allclose(other_s, (other - train.mean(0)) / (train.std(0) + 1e-8))


def test_points_datamodule_standardises_with_train_statistics():
    dm = PointsDataModule("circles", n_samples=1000, seed=0)
    raw_x, _ = make_circles(1000, seed=0)
    train_idx, val_idx, _ = split_indices(1000, 0.2, 0.2, seed=0)
    expected_val = standardize(raw_x[train_idx], raw_x[val_idx])[1]
    assert torch.equal(dm.splits["val"][0], expected_val)
    assert (dm.num_features, dm.num_classes) == (2, 2)


def test_sequence_datamodule_exposes_sizes():
    dm = SequenceDataModule("parity", n_samples=100, seq_len=9, vocab_size=13, batch_size=8)
    assert (dm.vocab_size, dm.seq_len, dm.num_classes) == (13, 9, 2)


def _epoch(it, epoch=None):
    if epoch is not None:
        it.set_epoch(epoch)
    return torch.cat([xb for xb, _ in it])


def test_batch_iterator_visits_every_index_once_per_epoch_and_replays_from_the_seed():
    x = torch.arange(103)
    it = BatchIterator(x, x, batch_size=10, seed=7)
    iter(it)  # probing the object (as Lightning's checks do) serves nothing
    e0, e1 = _epoch(it, 0), _epoch(it, 1)
    assert len(it) == 11
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(103))
    assert not torch.equal(e0, e1)  # reshuffled per epoch
    assert torch.equal(e1, x[torch.randperm(103, generator=torch.Generator().manual_seed(8))])
    replay = BatchIterator(x, x, batch_size=10, seed=7)
    assert torch.equal(_epoch(replay, 0), e0) and torch.equal(_epoch(replay, 1), e1)
    assert torch.equal(_epoch(replay), e1)  # without set_epoch a pass repeats the epoch


def test_batch_iterator_drop_last_and_no_shuffle():
    x = torch.arange(25)
    batches = [xb for xb, _ in BatchIterator(x, x, 10, shuffle=False, drop_last=True)]
    assert [b.tolist() for b in batches] == [list(range(10)), list(range(10, 20))]


def test_batch_iterator_shards_are_disjoint_and_equal_in_length():
    x = torch.arange(101)
    shards = [BatchIterator(x, x, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    a, b = (_epoch(s) for s in shards)
    assert len(a) == len(b) == 50 and len(shards[0]) == len(shards[1]) == 7
    assert not set(a.tolist()) & set(b.tolist())


def test_batch_iterator_state_resumes_mid_epoch_with_the_remaining_batches():
    x = torch.arange(50)
    expected = _epoch(BatchIterator(x, x, 8, seed=3), 1)
    it = BatchIterator(x, x, 8, seed=3)
    _epoch(it, 0)
    it.set_epoch(1)
    stream = iter(it)
    seen = [next(stream)[0] for _ in range(3)]
    resumed = BatchIterator(x, x, 8, seed=3)
    resumed.load_state_dict(it.state_dict())
    assert it.state_dict() == {"epoch": 1, "batches_done": 3}
    assert torch.equal(torch.cat([*seen, _epoch(resumed, 1)]), expected)


def test_a_split_smaller_than_a_batch_is_one_batch_unless_drop_last():
    x = torch.arange(10)
    assert [b.tolist() for b, _ in BatchIterator(x, x, 11, shuffle=False)] == [list(range(10))]
    with pytest.raises(ValueError, match="batch_size=11 with drop_last"):
        BatchIterator(x, x, 11, drop_last=True)
