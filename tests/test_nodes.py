"""Every node, called as ComfyUI calls it, on tiny random weights; outputs checked against declared types."""

import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.paths import OFFICIAL, REPO, put_comfy_api_on_path

COMFY_SOURCE = put_comfy_api_on_path()
from tests.support.factories import link_face_weights, write_published_checkpoint, TINY


class SD15VAE:
    """Stands in for ComfyUI's VAE object: encode(IMAGE [B,H,W,C]) -> unscaled posterior mode."""

    def __init__(self, channels=4):
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        self.vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], norm_num_groups=32, latent_channels=channels,
                                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                                 layers_per_block=1).eval()

    @torch.no_grad()
    def encode(self, pixels):
        return self.vae.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mode()


def conditioning(dim=TINY["cross_attention_dim"]):
    return [[torch.randn(1, 77, dim, generator=torch.Generator().manual_seed(3)), {"pooled_output": None}]]


def portrait(name="00381.png", size=512):
    image = Image.open(OFFICIAL / name).convert("RGB").resize((size, size))
    return torch.from_numpy(np.array(image)).float()[None] / 255.0


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_parts, face_weights):
    root = tmp_path_factory.mktemp("models") / "magicface"
    write_published_checkpoint(root / "magicface-tiny", parts=tiny_parts)
    link_face_weights(face_weights, root)
    return root


@pytest.fixture()
def env(models_dir, monkeypatch, pack):
    monkeypatch.setenv("MAGICFACE_MODELS", str(models_dir))

    toolkit_cls = pack.magicface_core.faces.toolkit.FaceToolkit
    box_cls = pack.magicface_core.faces.landmarks.FaceBox
    # The random detector finds noise; these tests check the nodes, so give it the face box.
    monkeypatch.setattr(toolkit_cls, "detect", lambda self, image: [box_cls(
        image.shape[1] * 0.27, image.shape[0] * 0.27, image.shape[1] * 0.73, image.shape[0] * 0.8)])
    return pack


def check_outputs(pack, node_cls, outputs):
    types = pack.nodes.types
    core = pack.magicface_core
    assert isinstance(outputs, tuple) and len(outputs) == len(node_cls.RETURN_TYPES)
    for kind, value in zip(node_cls.RETURN_TYPES, outputs):
        if kind == "IMAGE":
            assert value.ndim == 4 and value.shape[-1] == 3 and value.dtype == torch.float32
            assert 0 <= float(value.min()) and float(value.max()) <= 1
        elif kind == "MASK":
            assert value.ndim == 3 and value.dtype == torch.float32
        elif kind == "LATENT":
            assert set(value) == {"samples"} and value["samples"].ndim == 4 and value["samples"].shape[1] == 4
        elif kind == "STRING":
            assert isinstance(value, str) and value
        elif kind in (types.AU_VECTOR, types.AU_DELTA):
            assert isinstance(value, core.AUVector)
        elif kind == types.MAGICFACE_MODEL:
            assert isinstance(value, pack.nodes.loaded_model.LoadedMagicFace)
        elif kind == types.MAGICFACE_FACE_TOOLS:
            assert isinstance(value, core.faces.toolkit.FaceToolsChoice)
        elif kind == types.MAGICFACE_ID:
            assert isinstance(value, core.IdentityFeatures)
        elif kind == types.MAGICFACE_CROP:
            # None: Face Track found no face in that frame
            assert isinstance(value, tuple) and all(t is None or isinstance(t, core.faces.crop.CropTransform)
                                                    for t in value)
        else:
            raise AssertionError(f"no check for {kind}")


def call(node_cls, **inputs):
    """As ComfyUI's executor calls a node: its FUNCTION; a V3 node's NodeOutput holds the outputs."""
    outputs = getattr(node_cls(), node_cls.FUNCTION)(**inputs)
    return tuple(outputs.result) if hasattr(outputs, "result") else outputs


def run(pack, key, **inputs):
    node_cls = pack.NODE_CLASS_MAPPINGS[key]
    outputs = call(node_cls, **inputs)
    check_outputs(pack, node_cls, outputs)
    return outputs


def test_every_node_declares_what_comfyui_needs(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert {"MagicFaceModelLoader", "MagicFaceAUEstimate", "MagicFaceAUDeltaEditor", "MagicFaceFaceParseContour",
            "MagicFaceIDEncoder", "MagicFaceKSampler"} <= set(pack.NODE_CLASS_MAPPINGS)
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        function = cls.execute  # V3: ComfyUI's FUNCTION (EXECUTE_NORMALIZED) passes the inputs on to execute
        params = inspect.signature(function).parameters
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for name in spec["required"]:
            assert name in params or takes_kwargs, (key, name)
        for name in spec.get("optional", {}):
            assert (name in params and params[name].default is not inspect.Parameter.empty) or takes_kwargs, (key, name)
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
        assert cls.CATEGORY == "MagicFace" and cls.DESCRIPTION


def test_the_pack_imports_without_comfyui_and_nothing_heavy(tmp_path):
    # As ComfyUI does it: from the folder's __init__.py, with nothing of the repository on sys.path.
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.append({str(COMFY_SOURCE)!r})  # ComfyUI's own API (comfy_api), as inside ComfyUI
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        spec = importlib.util.spec_from_file_location("ComfyUI-MagicFace", {str(REPO / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO)!r}])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = pack
        spec.loader.exec_module(pack)
        assert len(pack.NODE_CLASS_MAPPINGS) >= 6 and not pack.nodes.host.in_comfyui()
        for cls in pack.NODE_CLASS_MAPPINGS.values():
            cls.INPUT_TYPES()
        print([m for m in ("magicface_core", "diffusers", "transformers", "face_alignment", "cv2", "torchvision")
               if m in sys.modules])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "MAGICFACE_MODELS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_loader_lists_and_loads_both_formats(env, models_dir, tmp_path):
    loader = env.NODE_CLASS_MAPPINGS["MagicFaceModelLoader"]
    choices = loader.INPUT_TYPES()["required"]["weights"][1]["options"]  # V3: a COMBO with its options
    assert "magicface-tiny" in choices and choices[-1].startswith("download mengtingwei/magicface")
    (model,) = run(env, "MagicFaceModelLoader", weights="magicface-tiny", dtype="fp32")
    model.model.save_pretrained(models_dir / "tiny.safetensors")
    assert "tiny.safetensors" in loader.INPUT_TYPES()["required"]["weights"][1]["options"]
    (again,) = run(env, "MagicFaceModelLoader", weights="tiny.safetensors", dtype="bf16")
    assert again.model.dtype == torch.bfloat16
    with pytest.raises(env.magicface_core.WeightsNotFoundError, match="huggingface.co/mengtingwei/magicface"):
        run(env, "MagicFaceModelLoader", weights="gone", dtype="auto")


def test_edit_graph_produces_latents_for_every_au_variant(env):
    (model,) = run(env, "MagicFaceModelLoader", weights="magicface-tiny", dtype="fp32")
    vae, cond = SD15VAE(), conditioning()
    image = portrait()
    (condition, mask) = run(env, "MagicFaceFaceParseContour", image=image, parser="bisenet")
    assert condition.shape == (1, 512, 512, 3) and mask.shape == (1, 512, 512)
    (identity,) = run(env, "MagicFaceIDEncoder", magicface_model=model, image=image, vae=vae, conditioning=cond)
    sliders = {k: 0.0 for k in env.nodes.au_nodes.SLIDERS}
    sliders["AU12_lip_corner_puller"] = 3.0
    delta, table = run(env, "MagicFaceAUDeltaEditor", preset="happiness", preset_strength=1.0, **sliders)
    assert delta.to_dicts(skip_zeros=True) == [{"AU6": 1.0, "AU12": 4.0}]
    (sweep,) = run(env, "MagicFaceAUSweep", au="AU26", start=-2.0, stop=2.0, step=2.0, base=delta)
    assert sweep.get("AU26").tolist() == [-2.0, 0.0, 2.0] and sweep.get("AU12").tolist() == [4.0] * 3
    (latent,) = run(env, "MagicFaceKSampler", magicface_model=model, identity=identity, condition=condition,
                    vae=vae, au_delta=sweep, conditioning=cond, seed=5, steps=2, au_guidance=3.0, sampler="ddim")
    assert latent["samples"].shape == (3, 4, 64, 64)
    # The nodes are the core's edit and nothing else: the same numbers as calling the library directly.
    core = model.model
    text = cond[0][0]
    direct = core.sample(core.encode_identity(vae.encode(image), text), vae.encode(condition), sweep, text,
                         steps=2, guidance=3.0, sampler="ddim", seed=5)
    assert torch.allclose(latent["samples"], direct, rtol=1e-5, atol=1e-6)
    (both,) = run(env, "MagicFaceAUDeltaBatch", delta_1=delta, delta_2=sweep)
    assert len(both) == 4


def test_transfer_and_estimate(env):
    images = torch.cat([portrait("00025.png"), portrait("00512.png")])
    aus, table = run(env, "MagicFaceAUEstimate", image=images, face_index=0)
    assert len(aus) == 2 and "#1" in table
    zero = {k: 0.0 for k in env.nodes.au_nodes.SLIDERS}
    delta, _ = run(env, "MagicFaceAUDeltaEditor", source_aus=aus[0], target_aus=aus[1], **zero)
    assert delta.allclose(aus[1] - aus[0])
    with pytest.raises(env.magicface_core.AUInputError, match="both"):
        run(env, "MagicFaceAUDeltaEditor", source_aus=aus[0], **zero)


def test_crop_and_paste_back_a_full_photo(env):
    photo = torch.nn.functional.pad(portrait("00512.png").movedim(-1, 1), (200, 100, 50, 150), value=0.3).movedim(1, -1)
    portrait_image, crops = run(env, "MagicFaceFaceCrop", image=photo, face_index=0)
    assert portrait_image.shape == (1, 512, 512, 3)
    (pasted,) = run(env, "MagicFacePasteBack", original=photo, edited=portrait_image, crop=crops, keep_detail=True)
    assert pasted.shape == photo.shape
    assert torch.allclose(pasted, photo, atol=1 / 255 + 1e-6)
    three = portrait_image.expand(3, -1, -1, -1)
    (batch,) = run(env, "MagicFacePasteBack", original=photo, edited=three, crop=crops, keep_detail=False,
                   mask=torch.ones(3, 512, 512))
    assert batch.shape[0] == 3


def test_bad_inputs_get_messages_a_user_can_act_on(env):
    (model,) = run(env, "MagicFaceModelLoader", weights="magicface-tiny", dtype="fp32")
    core = env.magicface_core
    vae = SD15VAE()
    with pytest.raises(core.ImageInputError, match="Face Crop"):
        run(env, "MagicFaceIDEncoder", magicface_model=model, image=torch.rand(1, 512, 384, 3), vae=vae,
            conditioning=conditioning())
    with pytest.raises(core.ImageInputError, match="SD 1.5"):
        run(env, "MagicFaceIDEncoder", magicface_model=model, image=portrait(), vae=vae, conditioning=conditioning(2048))
    with pytest.raises(core.ImageInputError, match="4 channels"):
        run(env, "MagicFaceIDEncoder", magicface_model=model, image=portrait(), vae=SD15VAE(16),
            conditioning=conditioning())
    with pytest.raises(core.AUInputError, match="under 64"):
        run(env, "MagicFaceAUSweep", au="AU1", start=-10.0, stop=10.0, step=0.1)
    # A square portrait of another size is resized rather than refused.
    (identity,) = run(env, "MagicFaceIDEncoder", magicface_model=model, image=portrait(size=300), vae=vae,
                      conditioning=conditioning())
    assert identity.tokens[0].shape[1] == 64 * 64
