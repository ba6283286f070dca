"""k-NN classification against scikit-learn and a direct numpy computation."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from sparsehead.evaluate import EvaluationError, knn_classify


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


def test_weighted_vote_matches_direct_computation():
    xtr, ytr, xte, _ = random_problem(1, n_train=500, classes=6)
    k, t = 200, 0.1
    ntr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    nte = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sim = nte @ ntr.T
    expected = []
    for row in sim:
        nearest = np.argsort(-row)[:k]
        scores = np.zeros(6)
        np.add.at(scores, ytr[nearest], np.exp(row[nearest] / t))
        expected.append(scores.argmax())
    ours = knn_classify(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), k=k, temperature=t)
    np.testing.assert_array_equal(ours.numpy(), np.array(expected))


@pytest.mark.parametrize("temperature", [None, 0.1])
def test_batching_gives_the_same_predictions_as_one_block(temperature):
    xtr, ytr, xte, _ = random_problem(2)
    args = (torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte))
    one_block = knn_classify(*args, k=20, temperature=temperature, batch_size=len(xte))
    for batch_size in (1, 7, 64):
        torch.testing.assert_close(knn_classify(*args, k=20, temperature=temperature, batch_size=batch_size), one_block)


def test_k_larger_than_the_training_set_is_a_clear_error():
    with pytest.raises(EvaluationError, match="k=11 is larger than the training set"):
        knn_classify(torch.randn(10, 3), torch.zeros(10, dtype=torch.long), torch.randn(2, 3), k=11)
