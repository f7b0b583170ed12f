"""Each concern lives in one place: these check that the front ends share it and that it computes
what a plain computation gives."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from magicface_core import AUInputError, AUVector, CheckpointError, MagicFace
from magicface_core.imaging import as_portrait, resize_portraits
from magicface_core.model.sd15 import load_sd15, vae_decode, vae_encode
from tests.support.factories import TINY, random_inputs, write_tiny_sd15
from tests.support.paths import OFFICIAL


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"), with_unet=True)


# --- one portrait resize rule ----------------------------------------------------------------

def test_cli_and_nodes_resize_a_portrait_the_same_way(pack):
    photo = np.array(Image.open(OFFICIAL / "00381.png").convert("RGB").resize((700, 700)))
    cli = as_portrait(photo)
    node = pack.nodes.images.portrait_pixels(torch.from_numpy(photo).float()[None] / 255.0, "the image")
    assert node.shape == (1, 512, 512, 3)
    node_uint8 = (node[0] * 255).round().to(torch.uint8).numpy()
    assert np.abs(node_uint8.astype(int) - cli.astype(int)).max() <= 1  # only the CLI's uint8 rounding differs
    # ...and the rule is antialiased bicubic, computed plainly here.
    plain = F.interpolate(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, size=(512, 512),
                          mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.allclose(resize_portraits(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255), plain)


# --- one AU check ----------------------------------------------------------------------------

def test_every_au_spelling_becomes_the_same_vector():
    expected = AUVector.from_dict({"AU12": 3, "AU6": 2})
    row = expected.values[0].tolist()
    for value in (expected, {"AU12": 3, "AU6": 2}, "AU12=3, AU6=2", row, torch.tensor([row]), np.array(row)):
        assert torch.equal(AUVector.coerce(value).values, expected.values)


@pytest.mark.parametrize("value, message", [
    ([1.0] * 11, "an AU vector has 12 values"),
    ([float("nan")] * 12, "finite"),
    ({"AU99": 1}, "unknown action unit"),
    (object(), "AU values must be an AUVector, a mapping"),
])
def test_bad_au_input_is_refused_with_one_message(value, message):
    with pytest.raises(AUInputError, match=message):
        AUVector.coerce(value)


def test_sample_takes_a_mapping_as_au_delta_and_gives_the_same_numbers(tiny_model):
    inputs = random_inputs(TINY)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    run = lambda au: tiny_model.sample(features, inputs["cond_latents"], au, inputs["text_embeds"], steps=3,
                                       noise=inputs["noise"])
    assert torch.equal(run({"AU26": 2}), run(AUVector.from_dict({"AU26": 2})))


# --- explicit placement -------------------------------------------------------------------------

def test_the_model_computes_where_it_was_told(tiny_checkpoint):
    model = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    assert model.device == torch.device("cpu")
    inputs = random_inputs(TINY)
    reference = model.sample(model.encode_identity(inputs["id_latents"], inputs["text_embeds"]),
                             inputs["cond_latents"], [0.5] * 12, inputs["text_embeds"], steps=2, noise=inputs["noise"])
    # Weights moved behind the model's back do not change where it computes: it is told.
    model.set_execution_device("meta")
    assert model.device == torch.device("meta")
    model.to("cpu")
    assert model.device == torch.device("cpu")
    model.enable_model_offload("cpu")
    assert model.device == torch.device("cpu")
    again = model.sample(model.encode_identity(inputs["id_latents"], inputs["text_embeds"]),
                         inputs["cond_latents"], [0.5] * 12, inputs["text_embeds"], steps=2, noise=inputs["noise"])
    assert torch.equal(again, reference)


# --- edit_photo's default face toolkit --------------------------------------------------------------

def test_edit_photo_without_a_toolkit_builds_the_default_one(tiny_model, sd15, monkeypatch, tmp_path):
    import magicface_core.edit as edit

    built = []

    class Faces:
        def condition(self, portrait):
            return np.zeros_like(portrait), None

    def default_toolkit(device):
        built.append(device)
        return Faces()

    monkeypatch.setattr(edit, "default_toolkit", default_toolkit)
    parts = load_sd15(sd15)
    photo = np.asarray(Image.open(OFFICIAL / "00381.png").convert("RGB"))
    out = edit.edit_photo(photo, AUVector.from_dict({"AU12": 2}), tiny_model, parts,
                          settings=edit.EditSettings(steps=1))
    assert built == [tiny_model.device] and out[0].shape == (512, 512, 3)
    # With a condition given and no crop, no face network is needed at all.
    edit.edit_photo(photo, AUVector.zeros(), tiny_model, parts, condition=photo, settings=edit.EditSettings(steps=1))
    assert len(built) == 1


# --- one SD 1.5 loader, one latent helper ----------------------------------------------------

def test_one_loader_with_or_without_the_unet(sd15):
    inference = load_sd15(sd15, "cpu", torch.float16)
    assert inference.unet is None and inference.vae.dtype == torch.float16
    assert inference.text_encoder.dtype == torch.float16 and not inference.vae.training
    training = load_sd15(sd15, with_unet=True)
    assert training.unet is not None and training.unet.dtype == torch.float32


def test_latent_helpers_match_the_vae_computed_plainly(sd15):
    vae = load_sd15(sd15).vae
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        posterior = vae.encode(images * 2 - 1).latent_dist
        decoded = ((vae.decode(posterior.mean).sample / 2 + 0.5).clamp(0, 1))
    assert torch.equal(vae_encode(vae, images), posterior.mean)
    sampled = vae_encode(vae, images, torch.Generator().manual_seed(7))
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(sampled, posterior.mean + posterior.std * noise, atol=1e-6)
    assert torch.allclose(vae_decode(vae, posterior.mean), decoded, atol=1e-6)


# --- one strict-load helper --------------------------------------------------------------------

def test_strict_load_names_what_is_wrong_for_every_network(tmp_path):
    from magicface_core.faces.au_estimation import LibreFaceAUNet, load_libreface
    from magicface_core.faces.parsing import BiSeNet, load_bisenet

    bisenet = {k: v for k, v in BiSeNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(bisenet, tmp_path / "bisenet.pth")
    load_bisenet(tmp_path / "bisenet.pth")  # num_batches_tracked may be absent
    bisenet.pop("cp.resnet.conv1.weight")
    torch.save(bisenet, tmp_path / "bisenet.pth")
    with pytest.raises(CheckpointError, match=r"is not the BiSeNet face parser.*missing 1 key\(s\): cp.resnet.conv1.weight"):
        load_bisenet(tmp_path / "bisenet.pth")
    libreface = LibreFaceAUNet().state_dict()
    libreface["classifier.4.weight"] = torch.zeros(3, 128)
    torch.save(libreface, tmp_path / "libreface.pt")
    with pytest.raises(CheckpointError, match=r"classifier.4.weight \(file \[3, 128\], model \[12, 128\]\)"):
        load_libreface(tmp_path / "libreface.pt")
