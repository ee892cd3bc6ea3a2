"""Device handling of the shared sequence code, checked without a GPU. Under torch's FakeTensorMode a
tensor can claim device cuda:0 on a CPU-only build, and an op that mixes it with a non-scalar CPU tensor
raises the device-mismatch error a GPU would. (The mode's coverage of CUDA on a CPU-only build is partial,
e.g. autograd and some view ops are missing, so these checks stay narrow; scripts/device_check.py is the
full check on a GPU.)

Regression: random_offset_example (formal-length-generalization and rasp-l-length-generalization) built its
evaluation position ids from a count on the batch's device and an index on CPU, so every CUDA run of those
papers crashed at its first evaluation."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from methods._lib import seq_transformer as st
from methods._lib.seq_train import GPT2Decoder

fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")
SCHEMES = ["absolute", "nope", "random_offset", "random_offset_example"]


def fake_cuda():
    return fake_tensor.FakeTensorMode(allow_non_fake_inputs=True)


def cuda_tokens() -> torch.Tensor:
    """A batch without padding: indexing assignment is one of the ops fake CUDA lacks on a CPU build."""
    return torch.full((3, 7), 5, dtype=torch.long, device="cuda")


def padded_tokens() -> torch.Tensor:
    tokens = torch.full((3, 7), 5, dtype=torch.long)
    tokens[1, 5:] = 0  # PAD = 0 at the end of a shorter row
    return tokens


@pytest.mark.parametrize("scheme", SCHEMES)
def test_evaluation_position_ids_stay_on_the_batch_device(scheme: str) -> None:
    with fake_cuda():
        ids = st.position_ids(scheme, SimpleNamespace(tokens=cuda_tokens()), train=False, max_pos=20)
        assert ids is None or ids.device.type == "cuda"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_position_ids_keep_their_form_on_cpu(scheme: str) -> None:
    """The fix moved a count to CPU: the ids keep their form (consecutive from a start, EOS id repeated)."""
    tokens = padded_tokens()
    for train in (False, True):
        ids = st.position_ids(scheme, SimpleNamespace(tokens=tokens), train=train, max_pos=20,
                              gen=torch.Generator().manual_seed(0))
        if ids is None:
            continue
        assert ids.device.type == "cpu" and ids.dtype == torch.long
        if scheme == "random_offset_example":
            own = (tokens != 0).sum(1)
            for row, n in zip(ids, own.tolist()):  # consecutive up to EOS, then EOS's id repeated
                assert torch.equal(row[:n] - row[0], torch.arange(n)) and bool((row[n:] == row[n - 1]).all())
            if not train:
                assert int(ids[:, 0].max()) == 0


def test_gpt2_decoder_forward_on_a_cuda_batch() -> None:
    model = GPT2Decoder(vocab_size=12, n_positions=32, d_model=16, n_layers=2, n_heads=2, d_ff=32)
    with torch.no_grad(), fake_cuda():
        state = {k: torch.empty(v.shape, dtype=v.dtype, device="cuda")
                 for k, v in [*model.named_parameters(), *model.named_buffers()]}
        tokens = cuda_tokens()
        pos = st.position_ids("random_offset_example", SimpleNamespace(tokens=tokens), train=False, max_pos=31)
        logits = torch.func.functional_call(model, state, (tokens, pos))
        assert logits.device.type == "cuda" and logits.shape == (3, 7, 12)
