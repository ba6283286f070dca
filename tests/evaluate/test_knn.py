"""k-NN classification against scikit-learn, lightly's knn_predict and a direct numpy computation;
one top-k pass for both votes, the chunked bank and the float16 bank."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from sparsehead.evaluate import EvaluationError, knn, knn_classify
from sparsehead.evaluate.knn import Vote, feature_bank, knn_predict, knn_report


def random_problem(seed, n_train=300, n_test=200, dim=16, classes=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    ytr = rng.integers(0, classes, n_train)
    yte = rng.integers(0, classes, n_test)
    xtr = centres[ytr] + 1.5 * rng.normal(size=(n_train, dim))
    xte = centres[yte] + 1.5 * rng.normal(size=(n_test, dim))
    return xtr, ytr, xte, yte


def test_majority_vote_matches_sklearn_where_the_vote_is_unambiguous():
    xtr, ytr, xte, _ = random_problem(0)
    ours = knn_classify(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), k=5).numpy()
    ref = KNeighborsClassifier(n_neighbors=5, weights="uniform", metric="cosine", algorithm="brute")
    ref.fit(xtr, ytr)
    expected = ref.predict(xte)
    # sklearn breaks vote ties by the smallest label, the paper by the nearest neighbour: compare
    # every sample whose top vote count is unique, and check the tie rule itself below.
    neigh = ref.kneighbors(xte, return_distance=False)
    counts = np.stack([np.bincount(ytr[row], minlength=4) for row in neigh])
    unique_top = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1
    assert unique_top.sum() > 150  # the comparison covers most samples
    np.testing.assert_array_equal(ours[unique_top], expected[unique_top])
    # Tied samples: the class of the nearest neighbour among the tied classes.
    for i in np.flatnonzero(~unique_top):
        tied = set(np.flatnonzero(counts[i] == counts[i].max()))
        nearest_tied = next(ytr[j] for j in neigh[i] if ytr[j] in tied)
        assert ours[i] == nearest_tied


def test_tie_goes_to_the_nearest_neighbours_class():
    # Two votes for class 1 and two for class 0; the single nearest neighbour is class 0.
    train = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.8, 0.5], [0.7, 0.6], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0, 2])
    pred = knn_classify(train, labels, torch.tensor([[1.0, 0.01]]), k=4)
    assert pred.tolist() == [0]


def weighted_reference(xtr, ytr, xte, k, t, classes):
    """The weighted vote written out: cosine similarities, the k largest, exp(sim / t) summed per class."""
    ntr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    nte = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    expected = []
    for row in nte @ ntr.T:
        nearest = np.argsort(-row)[:k]
        scores = np.zeros(classes)
        np.add.at(scores, ytr[nearest], np.exp(row[nearest] / t))
        expected.append(scores.argmax())
    return np.array(expected)


@pytest.mark.parametrize("k, t", [(200, 0.07), (200, 0.1), (13, 0.07)], ids=["instdisc", "moco-cifar", "k13"])
def test_weighted_vote_matches_direct_computation(k, t):
    xtr, ytr, xte, _ = random_problem(1, n_train=500, classes=6)
    ours = knn_classify(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), k=k, temperature=t)
    np.testing.assert_array_equal(ours.numpy(), weighted_reference(xtr, ytr, xte, k, t, 6))


def test_instdisc_vote_matches_lightly():
    # lightly (a `test` extra) is an independent implementation of the InstDisc weighted k-NN.
    from lightly.utils.benchmarking import knn_predict as lightly_knn_predict

    xtr, ytr, xte, _ = random_problem(3, n_train=600, classes=8)
    xtr, ytr, xte = torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr), torch.tensor(xte, dtype=torch.float32)
    bank = torch.nn.functional.normalize(xtr, dim=1).T
    theirs = lightly_knn_predict(torch.nn.functional.normalize(xte, dim=1), bank, ytr, 8, knn_k=200, knn_t=0.07)
    ours = knn_classify(xtr, ytr, xte, k=200, temperature=0.07)
    torch.testing.assert_close(ours, theirs[:, 0])


def test_both_votes_come_from_one_similarity_pass(monkeypatch):
    calls = []
    real = knn._similarities
    monkeypatch.setattr(knn, "_similarities", lambda q, b: calls.append(1) or real(q, b))
    xtr, ytr, xte, yte = (torch.tensor(a) for a in random_problem(4, n_train=400))
    report = knn_report(xtr, ytr, xte, yte, k=5, k_weighted=200, temperature=0.07, batch_size=len(xte))
    assert len(calls) == 1  # one matmul of the test block against the bank serves k = 5 and k = 200
    assert report["top1"] == knn.knn_accuracy(xtr, ytr, xte, yte, 5)
    assert report["weighted_top1"] == knn.knn_accuracy(xtr, ytr, xte, yte, 200, temperature=0.07)


@pytest.mark.parametrize("chunk", [7, 64, 399])
def test_a_bank_in_chunks_gives_the_predictions_of_one_chunk(monkeypatch, chunk):
    xtr, ytr, xte, _ = (torch.tensor(a) for a in random_problem(5, n_train=400))
    votes = [Vote(5), Vote(200, 0.07), Vote(3, 0.1)]
    whole = knn_predict(feature_bank(xtr, xtr.device), ytr, xte, votes)
    monkeypatch.setattr(knn, "BANK_CHUNK", chunk)
    torch.testing.assert_close(knn_predict(feature_bank(xtr, xtr.device), ytr, xte, votes), whole)


def test_a_float16_bank_agrees_with_float32_and_is_chosen_where_float32_does_not_fit(monkeypatch):
    xtr, ytr, xte, _ = (torch.tensor(a, dtype=torch.float32) for a in random_problem(6, n_train=400))
    votes = [Vote(5), Vote(200, 0.07)]
    full = knn_predict(feature_bank(xtr, xtr.device), ytr, xte, votes)
    half = knn_predict(feature_bank(xtr, xtr.device, torch.float16), ytr, xte, votes)
    assert (half == full).float().mean() > 0.97  # only near-tied neighbours may swap
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    cuda = torch.device("cuda")
    assert knn.bank_dtype(1_281_167, 2048, cuda) == torch.float16  # 10.5 GB in float32 > half of 3 GiB
    assert knn.bank_dtype(50_000, 2048, cuda) == torch.float32
    assert knn.bank_dtype(1_281_167, 2048, torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("temperature", [None, 0.07])
def test_batching_gives_the_same_predictions_as_one_block(temperature):
    xtr, ytr, xte, _ = random_problem(2)
    args = (torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte))
    one_block = knn_classify(*args, k=20, temperature=temperature, batch_size=len(xte))
    for batch_size in (1, 7, 64):
        torch.testing.assert_close(knn_classify(*args, k=20, temperature=temperature, batch_size=batch_size), one_block)


def test_k_larger_than_the_training_set_is_a_clear_error():
    with pytest.raises(EvaluationError, match="k=11 is larger than the training set"):
        knn_classify(torch.randn(10, 3), torch.zeros(10, dtype=torch.long), torch.randn(2, 3), k=11)
