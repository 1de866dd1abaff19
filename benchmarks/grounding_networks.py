"""The real networks of benchmarks/grounding.py: two data sets, two architectures,
seeded training on the CPU, recording with rv2dist, and the forward pass resumed from a
layer's (modified) activations.

- ``digits``: scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, no
  download), a plain CNN of six 3 x 3 conv layers and two hidden FC layers.
- ``mnist1d``: MNIST-1D (Greydanus 2020; the ``mnist1d`` package's ``make_dataset``
  generates it locally from its templates, seeded), a 1-D CNN of five conv layers and
  two hidden FC layers.

Every recorded layer is a whole block's output (ReLU included), flattened into units:
the principal-component deletion of grounding.py edits those activations and runs the
blocks after them, so they are recorded whole (``pool=False``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


def _torch():
    import torch

    return torch


@dataclass(frozen=True)
class Data:
    """A classification data set split into training and held-out (test) parts."""

    name: str
    x_train: object
    y_train: object
    x_test: object
    y_test: object

    @property
    def n_test(self) -> int:
        return len(self.y_test)


def digits(n_train) -> Data:
    """scikit-learn's digits, pixels scaled to [0, 1], shuffled with seed 0; the first
    ``n_train`` images train, the rest are held out."""
    torch = _torch()
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    x = torch.tensor(bunch.images[order] / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(bunch.target[order])
    return Data("digits", x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def mnist1d(n_train, n_test) -> Data:
    """MNIST-1D generated locally: ``n_train + n_test`` sequences of 40 (the package's
    default transformations and seed 42), the first ``n_train`` for training."""
    torch = _torch()
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # the package's defaults; make_dataset never downloads
    args.num_samples, args.train_split = n_train + n_test, n_train / (n_train + n_test)
    state = np.random.get_state()  # make_dataset seeds numpy's global generator: restore it
    try:
        made = make_dataset(args)
    finally:
        np.random.set_state(state)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)[:, None]  # noqa: E731
    return Data("mnist1d", as_x(made["x"]), torch.tensor(made["y"]), as_x(made["x_test"]), torch.tensor(made["y_test"]))


def _conv_stack(convs, conv, pool_after, flat_units):
    """Named blocks: conv + ReLU (+ 2x max pooling where ``pool_after``), then
    flatten + fc1, fc2 and the output layer."""
    torch = _torch()
    nn = torch.nn
    blocks = OrderedDict()
    for i, (c_in, c_out, stride) in enumerate(convs, 1):
        layers = [conv(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
        if i in pool_after:
            layers.append(nn.MaxPool2d(2))
        blocks[f"c{i}"] = nn.Sequential(*layers)
    blocks["fc1"] = nn.Sequential(nn.Flatten(), nn.Linear(flat_units, 64), nn.ReLU())
    blocks["fc2"] = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
    blocks["out"] = nn.Linear(64, 10)
    return nn.Sequential(blocks)


def digits_cnn():
    """8 x 8 -> c1 (16 ch, pooled to 4 x 4) c2 c3 -> c4 (32 ch, pooled to 2 x 2) c5 c6
    -> fc1 fc2 (64) -> 10.  Recorded widths: 256, 256, 256, 128, 128, 128, 64, 64."""
    torch = _torch()
    convs = [(1, 16, 1), (16, 16, 1), (16, 16, 1), (16, 32, 1), (32, 32, 1), (32, 32, 1)]
    return _conv_stack(convs, torch.nn.Conv2d, {1, 4}, 32 * 2 * 2)


def mnist1d_cnn():
    """40 -> c1 (8 ch, stride 2: 20) c2 -> c3 (16 ch, stride 2: 10) c4 -> c5 (stride 2:
    5) -> fc1 fc2 (64) -> 10.  Recorded widths: 160, 160, 160, 160, 80, 64, 64."""
    torch = _torch()
    convs = [(1, 8, 2), (8, 8, 1), (8, 16, 2), (16, 16, 1), (16, 16, 2)]
    return _conv_stack(convs, torch.nn.Conv1d, set(), 16 * 5)


ARCHITECTURES = {"digits": digits_cnn, "mnist1d": mnist1d_cnn}


def network(data_name, seed):
    """The architecture of data set ``data_name``, initialised from ``seed`` (He
    initialisation: the signal survives the untrained network's ReLU layers)."""
    torch = _torch()
    torch.manual_seed(seed)
    model = ARCHITECTURES[data_name]()
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    return model.eval()


def hidden_layers(model):
    """The recorded blocks, in depth order: every block but the output layer."""
    return [name for name, _ in model.named_children()][:-1]


def train(model, data, epochs, seed, batch=64, lr=2e-3):
    """Adam on the training part, batches drawn from ``seed``; returns the model in eval mode."""
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(data.y_train), generator=generator).split(batch):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(data.x_train[rows]), data.y_train[rows]).backward()
            optimiser.step()
    return model.eval()


def accuracy_from(model, layer, activations, labels):
    """Test accuracy when the blocks after ``layer`` run on ``activations`` (shaped as
    that block's output, observations first); ``layer=None`` runs the whole network on
    the inputs ``activations``."""
    torch = _torch()
    names = [name for name, _ in model.named_children()]
    h = torch.as_tensor(np.asarray(activations), dtype=torch.float32)
    with torch.no_grad():
        for name in names if layer is None else names[names.index(layer) + 1:]:
            h = getattr(model, name)(h)
    return float((h.argmax(1) == torch.as_tensor(labels)).float().mean())


def record(model, data, path, network_name):
    """Record the held-out activations of every hidden layer into the store ``path``
    with :func:`rv2dist.record_activations` (whole, unpooled); returns the path."""
    torch = _torch()
    import rv2dist

    loader = torch.utils.data.DataLoader(data.x_test, batch_size=256)
    rv2dist.record_activations(path, model, loader, hidden_layers(model), network=network_name,
                               obs=[f"test{i}" for i in range(data.n_test)], pool=False, progress=False,
                               overwrite=True)
    return path
