"""Grams of PyTorch models through forward hooks (skipped when torch is not installed)."""

import numpy as np
import pytest

# "torch.nn", not "torch": without torch, this folder would import as a namespace package.
pytest.importorskip("torch.nn")

import torch
from torch import nn

from ssc_jax.nets.torch_capture import torch_activation_grams

N = 30


class Net(nn.Module):
    """A small CNN whose modules are registered in another order than they run."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(8, 4, 3)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.unused = nn.Conv2d(3, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.head(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = Net()
    batch_norm = net.stem[1]
    batch_norm.running_mean.normal_()
    batch_norm.running_var.uniform_(0.5, 2.0)
    return net.train()


@pytest.fixture
def images():
    return torch.randn(N, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def by_hand(model, images, modules) -> dict[str, np.ndarray]:
    """float64 Grams of the named modules' outputs, taken with hooks in eval mode."""
    outputs = {}
    named = dict(model.named_modules())
    handles = [
        named[name].register_forward_hook(
            lambda module, args, out, name=name: outputs.setdefault(name, out.clone())
        )
        for name in modules
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(images)
    model.train(was_training)
    for handle in handles:
        handle.remove()
    flat = {name: outputs[name].reshape(len(images), -1).double().numpy() for name in modules}
    return {name: a @ a.T for name, a in flat.items()}


def assert_close(grams, expected):
    for gram, ref in zip(grams, expected.values(), strict=True):
        assert np.abs(gram - ref).max() <= 1e-5 * np.abs(ref).max()


def test_default_is_every_conv2d_in_forward_order(model, images):
    result = torch_activation_grams(model, images, batch_size=7)
    assert result.names == ["stem.0", "head"]  # named_modules() order is head, stem.0
    assert result.grams.shape == (2, N, N) and result.grams.dtype == np.float32
    assert_close(result.grams, by_hand(model, images, result.names))
    assert result.labels is None
    assert result.tokens is None  # no output had a token axis
    with torch.no_grad():
        expected = model.eval()(images).argmax(dim=1).numpy()
    np.testing.assert_array_equal(result.predictions, expected)


def test_numpy_inputs_give_the_same_grams(model, images):
    from_numpy = torch_activation_grams(model, images.double().numpy(), batch_size=8)
    from_tensor = torch_activation_grams(model, images, batch_size=N)
    np.testing.assert_allclose(from_numpy.grams, from_tensor.grams, rtol=1e-5, atol=1e-4)


def test_dataloader_with_labels_in_small_memory(model, images):
    labels = torch.arange(N) % 4
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=7, shuffle=False
    )
    layers = ["stem.0", "stem.1", "head", "fc"]
    # stem.0 and stem.1 (512 values per input) each exceed the budget and go to disk; head
    # and fc (144 and 3) fit it together.
    budget = 2 * 4 * N * 200  # half of it for the activations
    result = torch_activation_grams(model, loader, layers=layers, memory_budget_bytes=budget)
    assert result.names == layers
    np.testing.assert_array_equal(result.labels, labels.numpy())
    assert_close(result.grams, by_hand(model, images, layers))
    whole = torch_activation_grams(model, images, layers=layers)
    np.testing.assert_array_equal(result.predictions, whole.predictions)


def test_explicit_selection_by_names_and_types(model, images):
    by_name = torch_activation_grams(model, images, layers=["fc", "stem.0"])
    assert by_name.names == ["stem.0", "fc"]
    assert_close(by_name.grams, by_hand(model, images, by_name.names))
    by_type = torch_activation_grams(model, images, layers=[nn.BatchNorm2d, nn.Linear])
    assert by_type.names == ["stem.1", "fc"]
    mixed = torch_activation_grams(model, images, layers=[nn.ReLU, "head"])
    assert mixed.names == ["stem.2", "head"]
    with pytest.warns(UserWarning, match=r"only one layer is selected \(fc\)"):
        assert torch_activation_grams(model, images, layers=nn.Linear).names == ["fc"]


def test_a_selection_that_captures_nothing_names_the_closest_modules(model, images):
    with pytest.raises(ValueError, match="layers='LSTM' matches no module") as error:
        torch_activation_grams(model, images, layers=[nn.LSTM])
    with pytest.raises(ValueError, match=r"layers='stem\.9' matches no module") as error:
        torch_activation_grams(model, images, layers=["stem.9"])
    closest = str(error.value).split("closest module paths: ")[1]
    assert set(closest.split(" (")[0].split(", ")) == {
        "stem.0",
        "stem.1",
        "stem.2",
        "stem",
        "unused",
    }
    assert closest.endswith("(and 3 more)")
    with pytest.raises(ValueError, match=r"no selected module ran .*\['unused'\]"):
        torch_activation_grams(model, images, layers=["unused"])


def hooks(model) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


def test_training_modes_are_restored_and_hooks_removed(model, images):
    model.stem[1].eval()  # mixed modes must come back as they were
    modes = [module.training for module in model.modules()]
    torch_activation_grams(model, images)
    assert [module.training for module in model.modules()] == modes
    assert hooks(model) == 0
    with pytest.raises(ValueError):
        torch_activation_grams(model, images, layers=["unused"])
    assert [module.training for module in model.modules()] == modes
    assert hooks(model) == 0
    assert model.training


class Noisy(torch.utils.data.Dataset):
    """A dataset with random augmentation: a new batch every pass."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index] + 0.1 * torch.randn_like(self.images[index]), 0


def test_loaders_that_shuffle_or_change_are_refused(model, images):
    shuffled = torch.utils.data.DataLoader(images, batch_size=8, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        torch_activation_grams(model, shuffled)
    noisy = torch.utils.data.DataLoader(Noisy(images), batch_size=8)
    with pytest.raises(ValueError, match="different batch 0 on pass 2"):
        torch_activation_grams(model, noisy)
    assert hooks(model) == 0


class InPlace(nn.Module):
    """Every captured output is overwritten later in the pass: an in-place ReLU after each
    conv, an in-place residual add into a batch norm's output, an in-place normalisation."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        identity = self.relu1(self.conv1(x))
        out = self.bn2(self.conv2(identity))
        out += identity
        out = self.pool(self.relu2(out))
        out /= out.norm(dim=1, keepdim=True) + 1e-6
        return self.fc(out.flatten(1))


def test_outputs_are_captured_before_later_in_place_operations(images):
    torch.manual_seed(2)
    model = InPlace().eval()
    model.bn2.running_mean.normal_()
    with torch.no_grad():
        conv1 = model.conv1(images)
        conv2 = model.conv2(torch.relu(conv1))
        bn2 = model.bn2(conv2)
        pooled = model.pool(torch.relu(bn2 + torch.relu(conv1)))
    outputs = {"conv1": conv1, "conv2": conv2, "bn2": bn2, "pool": pooled}
    expected = {}
    for name, out in outputs.items():
        flat = out.reshape(N, -1).double().numpy()
        expected[name] = flat @ flat.T
    result = torch_activation_grams(model, images, layers=list(outputs), batch_size=7)
    assert result.names == list(outputs)
    assert_close(result.grams, expected)


class Stacks(nn.Module):
    """Two ``nn.ModuleList`` side by side, two blocks each: the lists themselves never run."""

    def __init__(self):
        super().__init__()
        self.encoders = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in "ab"])
        self.decoders = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in "ab"])

    def forward(self, x):
        for stage in [*self.encoders, *self.decoders]:
            x = stage(x)
        return x


def test_containers_without_a_forward_are_not_blocks():
    model = Stacks()
    inputs = torch.randn(N, 4, generator=torch.Generator().manual_seed(2))
    result = torch_activation_grams(model, inputs)
    assert result.names == ["encoders.0", "encoders.1"]
    assert_close(result.grams, by_hand(model, inputs, result.names))
