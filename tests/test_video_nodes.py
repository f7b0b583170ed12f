"""The video nodes and the batch extensions of the single-image nodes, called as ComfyUI calls them."""

import numpy as np
import pytest
import torch

from magicface_core.faces.toolkit import FaceToolkit

from tests.test_nodes import SD15VAE, conditioning, env, models_dir, portrait, run  # noqa: F401 (fixtures)
from tests.support.video_clips import linear_path, moving_clip


@pytest.fixture()
def dlib_env(env, models_dir, monkeypatch):  # noqa: F811
    faces = FaceToolkit(models_dir, "cpu", detector="dlib", jaw="2d")
    for module in (env.nodes.video_nodes, env.nodes.au_nodes, env.nodes.face_nodes):
        monkeypatch.setattr(module, "face_toolkit", lambda *args, **kwargs: faces)
    return env


def _batch(frames):
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def test_track_then_estimate_then_paste_back_a_batch(dlib_env):
    frames = moving_clip(linear_path((40, 20), (6, 2), 4), canvas=(320, 352), size=240)
    frames[2] = np.full_like(frames[2], 110)
    images = _batch(frames)
    portraits, crop, report = run(dlib_env, "MagicFaceFaceTrack", images=images, fps=25.0, face_index=0, detect_every=1)
    assert portraits.shape == (4, 512, 512, 3) and crop[2] is None and all(crop[t] for t in (0, 1, 3))
    assert report == "face in 3 of 4 frames; without a face (passed through): [2]"
    aus, _ = run(dlib_env, "MagicFaceAUEstimate", image=portraits, face_index=0, crop=crop)
    assert len(aus) == 4 and aus[2].allclose(aus[1])  # held from the frame before
    (smooth,) = run(dlib_env, "MagicFaceAUSmooth", aus=aus, fps=25.0, cutoff_hz=3.0)
    assert len(smooth) == 4
    condition, mask = run(dlib_env, "MagicFaceFaceParseContour", image=portraits, parser="bisenet", crop=crop)
    assert torch.equal(condition[2], portraits[2]) and mask[2].sum() == 0
    edited = torch.rand_like(portraits)
    (pasted,) = run(dlib_env, "MagicFacePasteBack", original=images, edited=edited, crop=crop, keep_detail=True)
    assert torch.equal(pasted[2], images[2]) and not torch.equal(pasted[0], images[0])


def test_keyframes_node_adds_to_a_per_frame_base(env):  # noqa: F811
    base = env.magicface_core.AUVector.from_dicts([{"AU6": 1.0}] * 5)
    delta, table = run(env, "MagicFaceAUKeyframes", keyframes="0:AU12=0; 4:AU12=2", interpolation="linear",
                       frames=0, base=base)
    assert delta.get("AU12").tolist() == [0.0, 0.5, 1.0, 1.5, 2.0] and delta.get("AU6").tolist() == [1.0] * 5
    (alone, _) = run(env, "MagicFaceAUKeyframes", keyframes="2:AU1=1", interpolation="smooth", frames=3)
    assert len(alone) == 3
    with pytest.raises(env.magicface_core.AUInputError, match="set frames, or connect a base"):
        run(env, "MagicFaceAUKeyframes", keyframes="0:AU12=1", interpolation="linear", frames=0)


@pytest.fixture()
def one_thread():
    """CPU kernels pick their algorithm by batch size when multithreaded; on the random tiny UNet those
    rounding differences grow to ~1% in two steps. One thread makes chunked and whole batches bit-comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("noise_per_edit", [False, True])
def test_ksampler_in_chunks_gives_the_latents_of_one_batch(env, noise_per_edit, one_thread):  # noqa: F811
    (model,) = run(env, "MagicFaceModelLoader", weights="magicface-tiny", dtype="fp32")
    vae, cond = SD15VAE(), conditioning()
    image = portrait()
    (identity,) = run(env, "MagicFaceIDEncoder", magicface_model=model, image=image, vae=vae, conditioning=cond)
    deltas = env.magicface_core.AUVector.from_dicts([{"AU12": v} for v in (-2.0, 0.0, 2.0)])
    conditions = torch.cat([image, image.flip(2), image * 0.5])
    common = dict(magicface_model=model, identity=identity, condition=conditions, vae=vae, au_delta=deltas,
                  conditioning=cond, seed=3, steps=2, au_guidance=3.0, sampler="ddim", noise_per_edit=noise_per_edit)
    (chunked,) = run(env, "MagicFaceKSampler", frames_per_chunk=2, **common)
    (whole,) = run(env, "MagicFaceKSampler", frames_per_chunk=16, **common)
    assert torch.allclose(chunked["samples"], whole["samples"], atol=1e-4)


def test_one_face_tools_choice_reaches_every_face_node_and_changes_no_shared_toolkit(env, monkeypatch):  # noqa: F811
    (choice,) = run(env, "MagicFaceFaceTools", detector="dlib", parser="bisenet", jaw="2d")
    seen = {}

    def track(frames, faces, fps, settings):
        seen["track"] = faces
        raise RuntimeError("stop here")

    monkeypatch.setattr(env.nodes.video_nodes, "track_faces", track)
    with pytest.raises(RuntimeError, match="stop here"):
        run(env, "MagicFaceFaceTrack", images=torch.rand(2, 64, 64, 3), fps=25.0, face_index=0, detect_every=1,
            face_tools=choice)
    assert (seen["track"].detector_name, seen["track"].jaw) == ("dlib", "2d")
    default = env.nodes.face_tools.face_toolkit()
    assert (default.detector_name, default.jaw) == ("face_alignment", "3dmm")  # the other graph's is untouched
    assert env.nodes.face_tools.face_toolkit(choice) is seen["track"]  # shared per choice, networks load once
    # Unconnected, a node's own widget decides (old workflows), and a connected choice overrides it.
    tools = env.nodes.face_nodes.face_tools_for
    assert tools(None, detector="dlib").detector == "dlib" and tools(choice, detector="face_alignment") is choice
