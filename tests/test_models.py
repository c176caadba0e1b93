import pytest
import torch
import torch.nn.functional as F

from toyloops import MLP, LogisticRegression, TransformerClassifier, classification_loss, probabilities


@pytest.mark.parametrize(("num_classes", "binary_logits", "shape"), [(2, 2, (5, 2)), (4, 2, (5, 4)), (2, 1, (5,)),
                                                                     (4, 1, (5, 4))])
def test_point_nets_emit_one_logit_a_class_unless_two_classes_choose_one(num_classes, binary_logits, shape):
    x = torch.randn(5, 3)
    assert LogisticRegression(3, num_classes, binary_logits=binary_logits)(x).shape == shape
    assert MLP(3, num_classes, hidden_sizes=[8, 4], dropout=0.2, binary_logits=binary_logits)(x).shape == shape


@pytest.mark.parametrize("pooling", ["cls", "first", "mean"])
@pytest.mark.parametrize(("num_classes", "binary_logits", "shape"), [(2, 2, (4, 2)), (3, 2, (4, 3)), (2, 1, (4,))])
def test_transformer_output_shape(pooling, num_classes, binary_logits, shape):
    net = TransformerClassifier(vocab_size=20, seq_len=6, num_classes=num_classes, d_model=16, nhead=2,
                                pooling=pooling, binary_logits=binary_logits)
    assert net(torch.randint(1, 20, (4, 6))).shape == shape


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TransformerClassifier(seq_len=300, max_len=256), "seq_len=300 .* exceeds max_len=256"),
        (lambda: TransformerClassifier(seq_len=256, max_len=256, pooling="cls"), "CLS"),
        (lambda: TransformerClassifier(d_model=30, nhead=4), "nhead=4 must divide d_model=30"),
        (lambda: MLP(hidden_sizes=[8, -2]), r"hidden_sizes must all be > 0, got \[8, -2\]"),
        (lambda: MLP(activation="swish"), "activation must be one of"),
        (lambda: MLP(dropout=1.5), "dropout"),
        (lambda: LogisticRegression(num_classes=1), "num_classes must be >= 2"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mean_pooling_accepts_seq_len_equal_to_max_len():
    assert TransformerClassifier(seq_len=8, max_len=8, pooling="mean", d_model=8, nhead=2)(
        torch.ones(2, 8, dtype=torch.long)
    ).shape == (2, 2)


def test_loss_is_bce_for_one_logit_and_cross_entropy_for_many():
    logits, target = torch.randn(6), torch.randint(0, 2, (6,))
    expected = F.binary_cross_entropy_with_logits(logits, target.float())
    assert torch.equal(classification_loss(logits, target), expected)
    logits, target = torch.randn(6, 3), torch.randint(0, 3, (6,))
    assert torch.equal(classification_loss(logits, target), F.cross_entropy(logits, target))


def test_probabilities_are_distributions_for_both_layouts():
    binary = probabilities(torch.tensor([0.0, 2.0]))
    assert torch.allclose(binary[:, 1], torch.sigmoid(torch.tensor([0.0, 2.0])))
    for p in (binary, probabilities(torch.randn(4, 5))):
        assert torch.allclose(p.sum(-1), torch.ones(len(p)))


def test_the_package_exports_every_public_name_and_loads_them_on_use():
    import subprocess
    import sys

    import toyloops

    assert "__version__" not in toyloops.__all__ and {"MLP", "Classifier", "Regressor"} <= set(toyloops.__all__)
    for name in toyloops.__all__:
        assert getattr(toyloops, name) is not None
    light = subprocess.run([sys.executable, "-c", "import sys, toyloops; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert light.stdout.strip() == "False"  # `import toyloops` alone loads no torch
