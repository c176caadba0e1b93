"""Every constructor argument of every public class refuses a value of the wrong type in one line
that names the class, the argument, the value, its type and what is allowed (issue 20 item 5)."""

import inspect
import typing

import pytest
import torch

import toyloops
from toyloops.rules.errors import ConfigError, fits

WRONG = ["3", 3, 2.5, True, None, ["x"], [[1.0]]]  # one of these is of the wrong type for any plain argument
REQUIRED = {"BatchIterator": {"x": torch.zeros(8, 2), "y": torch.zeros(8, dtype=torch.long), "batch_size": 4}}


def plain_arguments() -> list[tuple[str, str, object]]:
    """(class, argument, a value of the wrong type) for every plain-typed constructor argument."""
    cases = []
    for name in toyloops.__all__:
        cls = getattr(toyloops, name)
        if not inspect.isclass(cls):
            continue
        hints = {arg: hint for klass in reversed(cls.__mro__) if klass.__module__.startswith("toyloops")
                 and "__init__" in vars(klass) for arg, hint in typing.get_type_hints(klass.__init__).items()}
        for arg, hint in hints.items():
            if arg == "return" or all(fits(value, hint) for value in WRONG):
                continue  # a net, a tensor, a factory: not a plain type
            cases.append((name, arg, next(value for value in WRONG if not fits(value, hint))))
    return cases


CASES = plain_arguments()


def test_every_public_class_has_plain_arguments_checked():
    classes = {cls for cls, _, _ in CASES}
    assert {"Classifier", "Regressor", "MLP", "TransformerClassifier", "PointsDataModule", "ToyDataModule",
            "BatchIterator"} <= classes and len(CASES) > 60


@pytest.mark.parametrize(("cls", "arg", "value"), CASES, ids=[f"{c}.{a}" for c, a, _ in CASES])
def test_a_wrong_type_is_one_line_naming_the_argument_value_and_type(cls, arg, value):
    kwargs = {**REQUIRED.get(cls, {}), arg: value}
    if cls in ("Classifier", "Regressor") and arg != "net":
        kwargs["net"] = toyloops.MLP(2, 2) if cls == "Classifier" else toyloops.LinearRegression(2)
    with pytest.raises(ConfigError) as refused:
        getattr(toyloops, cls)(**kwargs)
    message = str(refused.value)
    assert message.startswith(f"{cls}.{arg}={value!r} ({type(value).__name__}): expected ") and "\n" not in message


def test_the_message_the_issue_quotes_names_the_real_cause():
    with pytest.raises(ConfigError, match=r"Classifier.num_classes='3' \(str\): expected int or None"):
        toyloops.Classifier(net=toyloops.MLP(2, 3), num_classes="3")
