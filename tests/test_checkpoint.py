import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from magicface_core import CheckpointError, MagicFace
from magicface_core.model.checkpoint import read_checkpoint
from tests.support.factories import TINY, write_published_checkpoint

DENO_FILE = "denoising_unet/diffusion_pytorch_model.safetensors"


def test_published_layout_loads_every_weight_exactly(tiny_checkpoint, tiny_model):
    deno_file = load_file(str(tiny_checkpoint / DENO_FILE))
    deno_state = tiny_model.denoiser.state_dict()
    assert torch.equal(deno_state["class_embedding.weight"], deno_file["au_aug_mlp.weight"])
    assert torch.equal(deno_state["class_embedding.bias"], deno_file["au_aug_mlp.bias"])
    assert len(deno_state) == len(deno_file)
    for key, value in deno_file.items():
        assert torch.equal(deno_state[key.replace("au_aug_mlp.", "class_embedding.")], value), key
    id_file = load_file(str(tiny_checkpoint / "ID_enc/diffusion_pytorch_model.safetensors"))
    id_state = tiny_model.id_encoder.state_dict()
    assert id_state.keys() == id_file.keys()
    assert all(torch.equal(id_state[k], v) for k, v in id_file.items())
    assert tiny_model.denoiser.conv_in.in_channels == 8 and tiny_model.id_encoder.conv_in.in_channels == 4


@pytest.mark.parametrize("name", ["round.safetensors", "round_folder"])
def test_save_and_reload_round_trip(tmp_path, tiny_model, tiny_checkpoint, name):
    path = tmp_path / name
    tiny_model.save_pretrained(path)
    again = MagicFace.from_pretrained(path, device="cpu", dtype=torch.float32)
    for a, b in ((tiny_model.denoiser, again.denoiser), (tiny_model.id_encoder, again.id_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    if name.endswith("folder"):
        # Our folders are in the published form: the authors' class names and key names.
        original = json.loads((tiny_checkpoint / "denoising_unet/config.json").read_text())
        written = json.loads((path / "denoising_unet/config.json").read_text())
        assert written["_class_name"] == "UNetDeno2DConditionModel"
        assert written["in_channels"] == 8 and written["class_embed_type"] is None
        assert {k: v for k, v in written.items() if not k.startswith("_") and k in original} == {
            k: v for k, v in original.items() if not k.startswith("_") and k in written
        }
        assert load_file(str(path / DENO_FILE)).keys() == load_file(str(tiny_checkpoint / DENO_FILE)).keys()


def _copy(tiny_checkpoint, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    return target


def _edit(path, change):
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_missing_key_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    _edit(ckpt / DENO_FILE, lambda s: s.pop("au_aug_mlp.bias"))
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): au_aug_mlp\.bias"):
        MagicFace.from_pretrained(ckpt, device="cpu")


def test_unexpected_and_misshaped_keys_are_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)

    def change(state):
        state["extra.weight"] = torch.zeros(3)
        state["conv_in.weight"] = state["conv_in.weight"][:, :4].contiguous()

    _edit(ckpt / DENO_FILE, change)
    with pytest.raises(CheckpointError) as info:
        MagicFace.from_pretrained(ckpt, device="cpu")
    message = str(info.value)
    assert "unexpected 1 key(s): extra.weight" in message
    assert "conv_in.weight (file [32, 4, 3, 3], model [32, 8, 3, 3])" in message


def test_wrong_in_channels_in_config_is_explained(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    config_path = ckpt / "denoising_unet/config.json"
    config = json.loads(config_path.read_text())
    config["in_channels"] = 4
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="in_channels is 4"):
        MagicFace.from_pretrained(ckpt, device="cpu")


def test_missing_folder_and_not_a_checkpoint(tmp_path):
    (tmp_path / "denoising_unet").mkdir()
    with pytest.raises(CheckpointError, match="ID_enc/config.json"):
        read_checkpoint(tmp_path)
    plain = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="not a MagicFace checkpoint"):
        read_checkpoint(plain)


def test_bin_weights_load_without_unpickling_code(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    for part in ("denoising_unet", "ID_enc"):
        sft = ckpt / part / "diffusion_pytorch_model.safetensors"
        torch.save(load_file(str(sft)), ckpt / part / "diffusion_pytorch_model.bin")
        sft.unlink()
    model = MagicFace.from_pretrained(ckpt, device="cpu")
    assert model.denoiser.conv_in.in_channels == 8
    # A pickle that would run code is refused by weights_only loading.
    torch.save({"conv_in.weight": torch.nn.Linear(2, 2)}, ckpt / "ID_enc" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        MagicFace.from_pretrained(ckpt, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loading(tiny_checkpoint, dtype):
    model = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=dtype)
    assert model.dtype == dtype and model.id_encoder.conv_in.weight.dtype == dtype


def test_configs_are_not_tied_to_sd15_sizes(tmp_path):
    # 3 levels and other widths: the AU projection follows the time-embedding width.
    overrides = {**TINY, "block_out_channels": [32, 32, 64],
                 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
    ckpt = write_published_checkpoint(tmp_path / "c", overrides)
    model = MagicFace.from_pretrained(ckpt, device="cpu")
    assert model.denoiser.class_embedding.out_features == 128
    assert len(model.injection.blocks) == len(model.recorder.blocks) == 2 + 1 + 4  # down, mid, up (layers_per_block + 1 per up level)
