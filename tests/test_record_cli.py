"""``rv2dist record``: models named on the command line (a constructor in a module or
file, a torch.export program, a HuggingFace folder), inputs from files, against plain
forward passes; bad input exits 2 and writes nothing (skipped without torch)."""

import sys
import textwrap

import numpy as np
import pytest

import rv2dist
from rv2dist.cli.app import main

torch = pytest.importorskip("torch")

NETS = textwrap.dedent("""
    import torch

    class Net(torch.nn.Module):
        def __init__(self, width=6):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
            self.fc = torch.nn.Linear(width, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
""")


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A folder holding the module ``rv2dist_test_nets`` (imported by name from the
    current folder), and a Net(width=8) built from it, its weights in net.pt."""
    (tmp_path / "rv2dist_test_nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import rv2dist_test_nets

    torch.manual_seed(3)
    model = rv2dist_test_nets.Net(width=8).eval()
    torch.save(model.state_dict(), tmp_path / "net.pt")
    yield model
    sys.modules.pop("rv2dist_test_nets", None)
    sys.modules.pop("rv2dist_model_rv2dist_test_nets", None)


def _plain(model, inputs):
    """Mean-pooled conv and fc outputs by a plain forward pass."""
    with torch.no_grad():
        conv = model.conv(torch.as_tensor(inputs))
        fc = model.fc(torch.relu(conv).mean(dim=(2, 3)))
    return {"conv": conv.mean(dim=(2, 3)).numpy(), "fc": fc.numpy()}


def _assert_store(path, want, ids=None):
    stored = rv2dist.open_activations(path)
    assert list(stored.attrs["layers"]) == list(want)
    for name, values in want.items():
        np.testing.assert_allclose(stored[name].values, values, rtol=1e-5, atol=1e-6)
    if ids is not None:
        assert list(stored.obs.values) == list(ids)


def test_record_a_constructor_from_a_module_or_file_over_arrays(nets, tmp_path, capsys):
    inputs = np.random.default_rng(0).standard_normal((21, 3, 5, 5))  # float64: becomes the model's float32
    np.save("x.npy", inputs)
    common = ["--arg", "width=8", "--checkpoint", "net.pt", "--layers", "conv", "fc", "--batch-size", "5"]
    assert main(["-q", "record", "rv2dist_test_nets:Net", "--inputs", "x.npy", "--out", "a.zarr", *common]) == 0
    assert "n_obs      21" in capsys.readouterr().out
    _assert_store(tmp_path / "a.zarr", _plain(nets, inputs.astype(np.float32)), ids=range(21))
    ids = np.array([f"img{i}" for i in range(21)])
    np.savez("x.npz", inputs=inputs, obs=ids)
    assert main(["-q", "record", "rv2dist_test_nets.py:Net", "--inputs", "x.npz", "--out", "b.zarr", *common]) == 0
    _assert_store(tmp_path / "b.zarr", _plain(nets, inputs.astype(np.float32)), ids=ids)
    capsys.readouterr()
    assert main(["record", "rv2dist_test_nets:Net", "--list-layers"]) == 0
    assert capsys.readouterr().out.split() == ["conv", "Conv2d", "fc", "Linear"]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own
def test_record_a_folder_of_images_and_an_exported_program(nets, tmp_path):
    from PIL import Image

    colours = {"b.png": (255, 0, 0), "a.png": (0, 128, 255), "c.jpg": (10, 200, 30)}
    (tmp_path / "images").mkdir()
    for name, colour in colours.items():
        Image.new("RGB", (9, 7), colour).save(tmp_path / "images" / name)
    # uniform images stay uniform when resized: the inputs are known exactly
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pixels = np.stack([np.broadcast_to(((np.array(colours[name]) / 255 - mean) / std)[:, None, None], (3, 5, 5))
                       for name in sorted(colours)]).astype(np.float32)
    exported = torch.export.export(nets, (torch.zeros(2, 3, 5, 5),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, tmp_path / "net.pt2")
    options = ["--inputs", "images", "--image-size", "5", "--layers", "conv", "fc", "--batch-size", "2"]
    assert main(["-q", "record", "rv2dist_test_nets:Net", "--arg", "width=8", "--checkpoint", "net.pt",
                 *options, "--out", "images.zarr"]) == 0
    _assert_store(tmp_path / "images.zarr", _plain(nets, pixels), ids=sorted(colours))
    assert main(["-q", "record", "net.pt2", *options, "--out", "exported.zarr"]) == 0
    _assert_store(tmp_path / "exported.zarr", _plain(nets, pixels))


def test_record_a_huggingface_folder_over_sentences(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far"]
    wordpiece = tokenizers.Tokenizer(tokenizers.models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    wordpiece.post_processor = tokenizers.processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=wordpiece, pad_token="[PAD]",
                                                     unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    folder = tmp_path / "tiny-bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lines = ["the cat sat on the mat", "", "a dog ran", "the dog ran far far far on a mat", "cat"]
    (tmp_path / "sentences.txt").write_text("\n".join(lines) + "\n")
    sentences = [line for line in lines if line]
    with torch.no_grad():
        batch = tokenizer(sentences, padding=True, return_tensors="pt")
        hidden = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].numpy().astype(bool)
    layers = {"embeddings": hidden[0].numpy(), "encoder.layer.1": hidden[2].numpy()}
    common = ["record", str(folder), "--text", str(tmp_path / "sentences.txt"), "--layers", *layers,
              "--batch-size", "3"]
    assert main(["-q", *common, "--out", str(tmp_path / "mean.zarr")]) == 0
    want = {name: np.stack([h[i][mask[i]].mean(axis=0) for i in range(len(sentences))]) for name, h in layers.items()}
    _assert_store(tmp_path / "mean.zarr", want, ids=[1, 3, 4, 5])
    assert main(["-q", *common, "--pool", "tokens", "--out", str(tmp_path / "tokens.zarr")]) == 0
    want = {name: h[mask] for name, h in layers.items()}
    ids = [f"{line}:t{k}" for line, n in zip([1, 3, 4, 5], mask.sum(axis=1)) for k in range(n)]
    _assert_store(tmp_path / "tokens.zarr", want, ids=ids)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # a TorchScript file to refuse
def test_bad_input_exits_2_naming_it_and_writes_nothing(nets, tmp_path, capsys):
    np.save("x.npy", np.zeros((4, 3, 5, 5), np.float32))
    np.save("gray.npy", np.zeros((4, 1, 5, 5), np.float32))
    np.savez("two.npz", a=np.zeros((4, 3)), b=np.zeros((4, 3)))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), "scripted.pt")
    for name, data in (("garbage.npy", b"\x93NUMPY garbage"), ("empty.npy", b""), ("garbage.npz", b"PK garbage"),
                       ("cut.npz", b"PK\x03\x04" + b"\0" * 40)):
        (tmp_path / name).write_bytes(data)
    np.save("objects.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    (tmp_path / "exists.zarr").mkdir()
    model, layers = ["rv2dist_test_nets:Net"], ["--layers", "conv", "fc"]
    cases = [
        (["nosuchmodule:Net", "--inputs", "x.npy", *layers], "cannot import 'nosuchmodule'"),
        (["rv2dist_test_nets:Missing", "--inputs", "x.npy", *layers], "rv2dist_test_nets has no 'Missing'"),
        (["no/such/folder", "--inputs", "x.npy", *layers], "no such file or folder, and not module:callable"),
        ([*model, "--inputs", "x.npy", "--layers", "conv", "fc2"], "has no module 'fc2'; did you mean 'fc'"),
        ([*model, "--inputs", "missing.npy", *layers], "inputs missing.npy do not exist"),
        ([*model, "--inputs", "two.npz", *layers], "two.npz hold a, b: name the inputs array 'inputs' or 'x'"),
        *(([*model, "--inputs", name, *layers], f"inputs {name}: cannot read it as a {name[-4:]} array file")
          for name in ("garbage.npy", "empty.npy", "objects.npy", "garbage.npz", "cut.npz")),
        ([*model, "--inputs", "gray.npy", *layers], "the model (Net) failed on a batch of shape (4, 1, 5, 5)"),
        ([*model, "--text", "x.npy", *layers], "needs a tokenizer"),
        ([*model, "--arg", "width", "--inputs", "x.npy", *layers], "--arg 'width' is not KEY=VALUE"),
        ([*model, "--checkpoint", "x.npy", "--inputs", "x.npy", *layers], "checkpoint x.npy: cannot read it"),
        ([*model, "--checkpoint", "net.pt", "--inputs", "x.npy", *layers], "checkpoint net.pt does not fit the model"),
        (["scripted.pt", "--inputs", "x.npy", *layers], "scripted.pt is TorchScript"),
        ([*model, "--inputs", "x.npy", *layers, "--batch-size", "0"], "--batch-size must be at least 1"),
        ([*model, "--inputs", "x.npy"], "record needs --layers"),
        ([*model, "--inputs", "x.npy", *layers, "--out", "exists.zarr"], "store exists.zarr exists; --overwrite"),
    ]
    for arguments, message in cases:
        out = [] if "--out" in arguments else ["--out", "new.zarr"]
        assert main(["-q", "record", *arguments, *out]) == 2, arguments
        error = capsys.readouterr().err
        assert error.startswith("rv2dist record: error: ") and message in error, (arguments, error)
        assert not (tmp_path / "new.zarr").exists()
    assert not list((tmp_path / "exists.zarr").iterdir())
