import torch

from magicface_core.model.identity_attention import transformer_blocks
from tests.support.reference import concat_then_keep_first_half, forward_order


def test_blocks_are_listed_in_forward_order_not_registration_order(tiny_model):
    unet = tiny_model.id_encoder
    text = torch.randn(1, 77, 32)
    called = forward_order(unet, torch.randn(1, 4, 8, 8), 0, encoder_hidden_states=text)
    assert transformer_blocks(unet) == called
    registered = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert registered != called  # up_blocks are registered before mid_block


def test_patched_self_attention_equals_concat_then_keep_first_half(tiny_model):
    """Per block: x + processor(norm1(x)) == (cat[x,id] + attn1(norm1(cat[x,id])))[:, :N]."""
    from magicface_core import IdentityFeatures

    generator = torch.Generator().manual_seed(5)
    blocks = tiny_model.injection.blocks
    hidden = [torch.randn(3, 16 if b.norm1.normalized_shape[0] == 32 else 4, b.norm1.normalized_shape[0],
                          generator=generator) * 3 for b in blocks]
    ids = [torch.randn(1, h.shape[1], h.shape[2], generator=generator) * 3 for h in hidden]
    kv = tiny_model.injection.identity_kv(IdentityFeatures(tuple(ids)))
    with torch.no_grad():
        for block, h, idt in zip(blocks, hidden, ids):
            ours = h + block.attn1(block.norm1(h), identity=kv)
            reference = concat_then_keep_first_half(block, h, idt.expand(3, -1, -1))
            assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-5), (ours - reference).abs().max()


def test_identity_tokens_change_the_output(tiny_model):
    from magicface_core import IdentityFeatures

    block = tiny_model.injection.blocks[0]
    h = torch.randn(1, 16, 32)
    outputs = []
    for seed in (1, 2):
        ids = [torch.randn(1, 16, b.norm1.normalized_shape[0], generator=torch.Generator().manual_seed(seed))
               for b in tiny_model.injection.blocks]
        kv = tiny_model.injection.identity_kv(IdentityFeatures(tuple(ids)))
        with torch.no_grad():
            outputs.append(block.attn1(block.norm1(h), identity=kv))
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3


def test_recorder_returns_each_block_input(tiny_model):
    unet = tiny_model.id_encoder
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    expected = []
    hooks = [b.register_forward_pre_hook(lambda m, a: expected.append(a[0])) for b in transformer_blocks(unet)]
    with torch.no_grad():
        unet(latents, 0, encoder_hidden_states=text)
    for h in hooks:
        h.remove()
    features = tiny_model.encode_identity(latents, text)
    assert len(features.tokens) == len(expected) == 7
    for got, want in zip(features.tokens, expected):
        assert torch.equal(got, want)


def test_unbound_denoiser_refuses_to_run(tiny_model):
    import pytest

    block = tiny_model.injection.blocks[0]
    with pytest.raises(RuntimeError, match="without identity features"):
        block.attn1(torch.randn(1, 16, 32))
