"""Write the example workflows in example_workflows/ (ComfyUI's UI format) from short graph descriptions.

    python tools/build_workflows.py

Widget order and socket layout come from the nodes' own definitions (ours, and the newest tested
ComfyUI's built-ins as saved in tests/data), so the files stay in step with the nodes. Each file holds
what that ComfyUI's frontend saves; older frontends load it too, since they restore widget values by
position and ignore the values of widgets they do not have (tests/test_workflows.py checks each
version).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.comfy_graph import (NEWEST, OLDEST, default_value, load_builtins, our_definitions,  # noqa: E402
                                       socket_inputs, widget_slots)
from tests.support.paths import load_pack  # noqa: E402

SD15_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
MAGICFACE_WEIGHTS = "mengtingwei--magicface"  # the folder the loader's download choice creates
PROMPT = "A close up of a person."
UPSCALER = "4x-UltraSharp.pth"
SD21_CHECKPOINT = "v2-1_512-ema-pruned.safetensors"  # SD 2.1-base, FineFace's base model
FINEFACE_WEIGHTS = "Tvaranka--fineface"  # the folder FineFace Apply's download choice creates
FINEFACE_REPO_NAME = "Tvaranka/fineface"


class Graph:
    def __init__(self, definitions: dict):
        self.definitions = definitions
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def node(self, kind: str, pos: tuple[int, int], title: str | None = None, size=(320, 120), **widgets) -> dict:
        node_id = len(self.nodes) + 1
        if kind == "Note":
            node = {"id": node_id, "type": "Note", "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
                    "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [widgets["text"]],
                    "color": "#432", "bgcolor": "#653"}
            self.nodes.append(node)
            return node
        definition = self.definitions[kind]
        values = []
        for name, spec in widget_slots(definition):
            values.append(widgets.pop(name) if name in widgets else default_value(name, spec))
        if widgets:
            raise KeyError(f"{kind} has no widgets {sorted(widgets)}")
        node = {
            "id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id,
            "mode": 0,
            "inputs": [{"name": name, "type": socket, "link": None} for name, socket, _ in socket_inputs(definition)],
            "outputs": [{"name": name, "type": kind_, "links": [], "slot_index": i}
                        for i, (name, kind_) in enumerate(zip(definition["output_name"], definition["output"]))],
            "properties": {"Node name for S&R": kind},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, source: dict, output: str, target: dict, input_name: str) -> None:
        out_slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == output)
        kind = source["outputs"][out_slot]["type"]
        in_slot = next((i for i, s in enumerate(target["inputs"]) if s["name"] == input_name), None)
        if in_slot is None:  # a widget fed by a link (e.g. fps): the frontend adds an input named after it
            assert input_name in dict(widget_slots(self.definitions[target["type"]])), (target["type"], input_name)
            target["inputs"].append({"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None})
            in_slot = len(target["inputs"]) - 1
        link_id = len(self.links) + 1
        self.links.append([link_id, source["id"], out_slot, target["id"], in_slot, kind])
        source["outputs"][out_slot]["links"].append(link_id)
        target["inputs"][in_slot]["link"] = link_id

    def workflow(self) -> dict:
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
            "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [0, 0]}},
            "version": 0.4,
        }


def shared_front(g: Graph, image_name: str, note: str, photo: tuple[dict, str] | None = None):
    """Photo -> crop -> condition; SD 1.5 CLIP/VAE and the prompt; MagicFace model; identity.
    ``photo``: (node, output) giving the photo, instead of a Load Image of ``image_name``."""
    g.node("Note", (20, -230), size=(560, 190), text=note)
    if photo is None:
        photo = (g.node("LoadImage", (20, 0), "Photo", size=(300, 320), image=image_name), "IMAGE")
    crop = g.node("MagicFaceFaceCrop", (360, 0))
    g.link(*photo, crop, "image")
    parse = g.node("MagicFaceFaceParseContour", (360, 180))
    g.link(crop, "portrait", parse, "image")
    checkpoint = g.node("CheckpointLoaderSimple", (20, 380), "SD 1.5 (for its CLIP and VAE)", ckpt_name=SD15_CHECKPOINT)
    prompt = g.node("CLIPTextEncode", (360, 380), "MagicFace prompt (keep as is)", size=(320, 100), text=PROMPT)
    g.link(checkpoint, "CLIP", prompt, "clip")
    model = g.node("MagicFaceModelLoader", (20, 560), weights=MAGICFACE_WEIGHTS)
    identity = g.node("MagicFaceIDEncoder", (720, 0))
    g.link(model, "magicface_model", identity, "magicface_model")
    g.link(crop, "portrait", identity, "image")
    g.link(checkpoint, "VAE", identity, "vae")
    g.link(prompt, "CONDITIONING", identity, "conditioning")
    return {"photo": photo, "crop": crop, "parse": parse, "checkpoint": checkpoint, "prompt": prompt,
            "model": model, "identity": identity}


def sampler(g: Graph, front: dict, delta_node: dict, pos, **widgets) -> dict:
    ksampler = g.node("MagicFaceKSampler", pos, size=(320, 330), **widgets)
    g.link(front["model"], "magicface_model", ksampler, "magicface_model")
    g.link(front["identity"], "identity", ksampler, "identity")
    g.link(front["parse"], "condition", ksampler, "condition")
    g.link(front["checkpoint"], "VAE", ksampler, "vae")
    g.link(delta_node, "au_delta", ksampler, "au_delta")
    g.link(front["prompt"], "CONDITIONING", ksampler, "conditioning")
    decode = g.node("VAEDecode", (pos[0] + 360, pos[1]))
    g.link(ksampler, "LATENT", decode, "samples")
    g.link(front["checkpoint"], "VAE", decode, "vae")
    return decode


def paste_and_save(g: Graph, front: dict, edited: dict, pos, prefix: str) -> None:
    paste = g.node("MagicFacePasteBack", pos)
    g.link(*front["photo"], paste, "original")
    g.link(edited, "IMAGE", paste, "edited")
    g.link(front["crop"], "crop", paste, "crop")
    save = g.node("SaveImage", (pos[0] + 360, pos[1]), size=(400, 420), filename_prefix=prefix)
    g.link(paste, "image", save, "images")


NOTE = ("Needs: an SD 1.5 checkpoint in models/checkpoints (for its CLIP and VAE), and the MagicFace weights: "
        "pick 'download mengtingwei/magicface' in the loader once (6.9 GB into models/magicface). Face "
        "detection, parsing and AU weights download on first use into models/magicface/<backend>/.")


def edit_portrait(defs: dict) -> dict:
    g = Graph(defs)
    front = shared_front(g, "00381.png", "Edit one portrait with the AU sliders.\n" + NOTE)
    editor = g.node("MagicFaceAUDeltaEditor", (720, 180), size=(340, 520),
                    AU6_cheek_raiser=2.0, AU12_lip_corner_puller=3.0)
    decode = sampler(g, front, editor, (1100, 0), seed=42)
    preview = g.node("PreviewImage", (1460, 160), "Edited crop", size=(300, 320))
    g.link(decode, "IMAGE", preview, "images")
    paste_and_save(g, front, decode, (1460, 520), "magicface/edit")
    return g.workflow()


def expression_transfer(defs: dict) -> dict:
    g = Graph(defs)
    front = shared_front(g, "00381.png", "Expression transfer: the AUs of the driving photo minus the AUs of "
                                         "the photo give the edit.\n" + NOTE)
    driving = g.node("LoadImage", (20, 740), "Driving expression", size=(300, 320), image="00025.png")
    source_aus = g.node("MagicFaceAUEstimate", (720, 180), "AUs of the photo")
    target_aus = g.node("MagicFaceAUEstimate", (720, 360), "AUs of the driving photo")
    g.link(front["crop"], "portrait", source_aus, "image")
    g.link(driving, "IMAGE", target_aus, "image")
    editor = g.node("MagicFaceAUDeltaEditor", (720, 540), size=(340, 520))
    g.link(source_aus, "aus", editor, "source_aus")
    g.link(target_aus, "aus", editor, "target_aus")
    decode = sampler(g, front, editor, (1100, 0), seed=42)
    paste_and_save(g, front, decode, (1460, 520), "magicface/transfer")
    return g.workflow()


def au_sweep(defs: dict) -> dict:
    g = Graph(defs)
    front = shared_front(g, "00381.png", "AU sweep: one AU from -6 to +6 as one batch (same noise for every "
                                         "frame), saved as an animation and as frames.\n" + NOTE)
    sweep = g.node("MagicFaceAUSweep", (720, 180), au="AU12", start=-6.0, stop=6.0, step=2.0)
    decode = sampler(g, front, sweep, (1100, 0), seed=42)
    animation = g.node("SaveAnimatedWEBP", (1820, 0), size=(400, 460), filename_prefix="magicface/sweep", fps=4.0)
    g.link(decode, "IMAGE", animation, "images")
    frames = g.node("SaveImage", (1820, 500), size=(400, 420), filename_prefix="magicface/sweep_frame")
    g.link(decode, "IMAGE", frames, "images")
    return g.workflow()


def edit_then_upscale(defs: dict) -> dict:
    g = Graph(defs)
    front = shared_front(g, "00381.png", "Edit, then upscale the edited crop with an upscale model (put one in "
                                         "models/upscale_models) before pasting it back: a large face in a big "
                                         "photo comes back sharp.\n" + NOTE)
    editor = g.node("MagicFaceAUDeltaEditor", (720, 180), size=(340, 520), AU1_inner_brow_raiser=2.0,
                    AU2_outer_brow_raiser=2.0, AU5_upper_lid_raiser=1.0, AU26_jaw_drop=2.0)
    decode = sampler(g, front, editor, (1100, 0), seed=42)
    loader = g.node("UpscaleModelLoader", (1100, 380), model_name=UPSCALER)
    upscale = g.node("ImageUpscaleWithModel", (1460, 160))
    g.link(loader, "UPSCALE_MODEL", upscale, "upscale_model")
    g.link(decode, "IMAGE", upscale, "image")
    paste_and_save(g, front, upscale, (1460, 520), "magicface/edit_upscaled")
    return g.workflow()


VIDEO_NOTE = ("Video: ComfyUI's Load Video gives the frames, audio and fps; Create Video + Save Video write "
              "them back. Every frame starts from the same noise; the KSampler samples frames_per_chunk frames "
              "at a time, so its memory does not grow with the clip (ComfyUI holds the frames themselves as "
              "one batch). Keep clips short at first: each frame is one full edit.\n")


def video_input(g: Graph, pos, file: str, title: str) -> dict:
    load = g.node("LoadVideo", pos, title, size=(300, 380), file=file)
    components = g.node("GetVideoComponents", (pos[0], pos[1] + 420))
    g.link(load, "VIDEO", components, "video")
    return components


def sd15_and_model(g: Graph, pos) -> dict:
    checkpoint = g.node("CheckpointLoaderSimple", pos, "SD 1.5 (for its CLIP and VAE)", ckpt_name=SD15_CHECKPOINT)
    prompt = g.node("CLIPTextEncode", (pos[0] + 340, pos[1]), "MagicFace prompt (keep as is)", size=(320, 100),
                    text=PROMPT)
    g.link(checkpoint, "CLIP", prompt, "clip")
    model = g.node("MagicFaceModelLoader", (pos[0], pos[1] + 180), weights=MAGICFACE_WEIGHTS)
    return {"checkpoint": checkpoint, "prompt": prompt, "model": model}


def identity_of(g: Graph, parts: dict, portrait: dict, output: str, pos) -> dict:
    identity = g.node("MagicFaceIDEncoder", pos)
    g.link(parts["model"], "magicface_model", identity, "magicface_model")
    g.link(portrait, output, identity, "image")
    g.link(parts["checkpoint"], "VAE", identity, "vae")
    g.link(parts["prompt"], "CONDITIONING", identity, "conditioning")
    return identity


def chunked_sampler(g: Graph, parts: dict, identity: dict, condition: dict, delta: dict, pos) -> dict:
    ksampler = g.node("MagicFaceKSampler", pos, size=(320, 360), seed=42, steps=25, sampler="dpmpp_2m_karras",
                      frames_per_chunk=8)
    g.link(parts["model"], "magicface_model", ksampler, "magicface_model")
    g.link(identity, "identity", ksampler, "identity")
    g.link(condition, "condition", ksampler, "condition")
    g.link(parts["checkpoint"], "VAE", ksampler, "vae")
    g.link(delta, "au_delta", ksampler, "au_delta")
    g.link(parts["prompt"], "CONDITIONING", ksampler, "conditioning")
    decode = g.node("VAEDecode", (pos[0], pos[1] + 400))
    g.link(ksampler, "LATENT", decode, "samples")
    g.link(parts["checkpoint"], "VAE", decode, "vae")
    return decode


def save_video(g: Graph, images: dict, components: dict, pos, prefix: str) -> None:
    create = g.node("CreateVideo", pos)
    g.link(images, "image", create, "images")
    g.link(components, "audio", create, "audio")
    g.link(components, "fps", create, "fps")
    save = g.node("SaveVideo", (pos[0] + 340, pos[1]), size=(400, 420), filename_prefix=prefix)
    g.link(create, "VIDEO", save, "video")


def animate_portrait(defs: dict) -> dict:
    g = Graph(defs)
    g.node("Note", (20, -230), size=(560, 190), text=(
        "Animate a portrait: the photo follows the expressions of the driving clip. The driving clip's AUs are "
        "estimated per frame and smoothed; each frame's edit is (driving AUs - AUs of the driving clip's first "
        "frame), sampled against the photo's one identity and condition (relative mode; for absolute, connect "
        "the photo's AUs as source instead).\n" + VIDEO_NOTE + NOTE))
    photo = g.node("LoadImage", (20, 0), "Portrait", size=(300, 320), image="00381.png")
    crop = g.node("MagicFaceFaceCrop", (360, 0))
    g.link(photo, "IMAGE", crop, "image")
    parse = g.node("MagicFaceFaceParseContour", (360, 180))
    g.link(crop, "portrait", parse, "image")
    parts = sd15_and_model(g, (20, 1100))
    identity = identity_of(g, parts, crop, "portrait", (720, 0))

    driving = video_input(g, (20, 380), "driving.mp4", "Driving clip")
    track = g.node("MagicFaceFaceTrack", (360, 380))
    g.link(driving, "images", track, "images")
    g.link(driving, "fps", track, "fps")
    aus = g.node("MagicFaceAUEstimate", (360, 600), "AUs of every driving frame")
    g.link(track, "portraits", aus, "image")
    g.link(track, "crop", aus, "crop")
    smooth = g.node("MagicFaceAUSmooth", (720, 380))
    g.link(aus, "aus", smooth, "aus")
    g.link(driving, "fps", smooth, "fps")
    neutral_frame = g.node("ImageFromBatch", (360, 800), "Neutral driving frame", batch_index=0)
    g.link(track, "portraits", neutral_frame, "image")
    neutral = g.node("MagicFaceAUEstimate", (720, 800), "AUs of the neutral frame")
    g.link(neutral_frame, "IMAGE", neutral, "image")
    editor = g.node("MagicFaceAUDeltaEditor", (1080, 380), size=(340, 520))
    g.link(neutral, "aus", editor, "source_aus")
    g.link(smooth, "aus", editor, "target_aus")
    decode = chunked_sampler(g, parts, identity, parse, editor, (1460, 0))
    paste = g.node("MagicFacePasteBack", (1820, 0))
    g.link(photo, "IMAGE", paste, "original")
    g.link(decode, "IMAGE", paste, "edited")
    g.link(crop, "crop", paste, "crop")
    save_video(g, paste, driving, (1820, 400), "magicface/animated")
    return g.workflow()


def edit_video(defs: dict) -> dict:
    g = Graph(defs)
    g.node("Note", (20, -230), size=(560, 190), text=(
        "Edit a clip: every frame keeps its pose, background and performance, and smiles more. For frame t the "
        "identity is the reference frame, the condition is frame t's own background and jaw, and the edit is "
        "AUs(t) + change(t) - AUs(reference); the keyframes ramp the smile in over the first 8 frames. Frames "
        "without the face pass through; the audio is kept.\n" + VIDEO_NOTE + NOTE))
    clip = video_input(g, (20, 0), "clip.mp4", "Clip")
    track = g.node("MagicFaceFaceTrack", (360, 0))
    g.link(clip, "images", track, "images")
    g.link(clip, "fps", track, "fps")
    parse = g.node("MagicFaceFaceParseContour", (360, 220), "Condition of every frame")
    g.link(track, "portraits", parse, "image")
    g.link(track, "crop", parse, "crop")
    reference = g.node("ImageFromBatch", (360, 420), "Reference frame (identity)", batch_index=0)
    g.link(track, "portraits", reference, "image")
    parts = sd15_and_model(g, (20, 760))
    identity = identity_of(g, parts, reference, "IMAGE", (720, 420))
    aus = g.node("MagicFaceAUEstimate", (720, 0), "AUs of every frame")
    g.link(track, "portraits", aus, "image")
    g.link(track, "crop", aus, "crop")
    smooth = g.node("MagicFaceAUSmooth", (720, 200))
    g.link(aus, "aus", smooth, "aus")
    g.link(clip, "fps", smooth, "fps")
    reference_aus = g.node("MagicFaceAUEstimate", (720, 600), "AUs of the reference frame")
    g.link(reference, "IMAGE", reference_aus, "image")
    editor = g.node("MagicFaceAUDeltaEditor", (1080, 0), "Own expression + a constant change", size=(340, 520),
                    AU6_cheek_raiser=1.0)
    g.link(reference_aus, "aus", editor, "source_aus")
    g.link(smooth, "aus", editor, "target_aus")
    keyframes = g.node("MagicFaceAUKeyframes", (1080, 600), "Keyframed change", size=(340, 200),
                       keyframes="0:AU12=0; 8:AU12=3", interpolation="smooth")
    g.link(editor, "au_delta", keyframes, "base")
    decode = chunked_sampler(g, parts, identity, parse, keyframes, (1460, 0))
    paste = g.node("MagicFacePasteBack", (1820, 0))
    g.link(clip, "images", paste, "original")
    g.link(decode, "IMAGE", paste, "edited")
    g.link(track, "crop", paste, "crop")
    save_video(g, paste, clip, (1820, 400), "magicface/edited_clip")
    return g.workflow()


def edit_with_ksampler(defs: dict) -> dict:
    g = Graph(defs)
    front = shared_front(g, "00381.png", "The same edit with ComfyUI's own KSampler: MagicFace Identity MODEL makes "
                                         "MagicFace's denoiser a MODEL that keeps the identity; MagicFace Edit "
                                         "Conditioning gives positive (the AUs) / negative (no change) and the "
                                         "latent. cfg is the AU guidance (1.5-3.5); any sampler and scheduler "
                                         "work, e.g. dpmpp_2m + karras at 25 steps.\n" + NOTE)
    editor = g.node("MagicFaceAUDeltaEditor", (720, 180), size=(340, 520),
                    AU6_cheek_raiser=2.0, AU12_lip_corner_puller=3.0)
    model = g.node("MagicFaceIdentityModel", (1100, 0))
    g.link(front["model"], "magicface_model", model, "magicface_model")
    g.link(front["identity"], "identity", model, "identity")
    conditioning = g.node("MagicFaceEditConditioning", (1100, 140))
    g.link(front["prompt"], "CONDITIONING", conditioning, "conditioning")
    g.link(front["parse"], "condition", conditioning, "condition")
    g.link(front["checkpoint"], "VAE", conditioning, "vae")
    g.link(editor, "au_delta", conditioning, "au_delta")
    ksampler = g.node("KSampler", (1460, 0), size=(320, 330), seed=42, steps=25, cfg=3.0,
                      sampler_name="dpmpp_2m", scheduler="karras")
    g.link(model, "model", ksampler, "model")
    g.link(conditioning, "positive", ksampler, "positive")
    g.link(conditioning, "negative", ksampler, "negative")
    g.link(conditioning, "latent", ksampler, "latent_image")
    decode = g.node("VAEDecode", (1820, 0))
    g.link(ksampler, "LATENT", decode, "samples")
    g.link(front["checkpoint"], "VAE", decode, "vae")
    paste_and_save(g, front, decode, (1820, 160), "magicface/edit_ksampler")
    return g.workflow()


FINEFACE_NOTE = ("FineFace (Varanka et al.): a new face from a prompt, with the expression given in the same 12 AUs "
                 "as absolute intensities 0..5. Needs: SD 2.1-base in models/checkpoints (e.g. "
                 f"{SD21_CHECKPOINT}) and FineFace's files: pick 'download {FINEFACE_REPO_NAME}' in FineFace "
                 "Apply once (130 MB into models/magicface). The authors sample 50 PNDM steps at CFG 7.5; any "
                 "ComfyUI sampler works.\n")


def fineface_front(g: Graph, aus: dict, batch: int = 1, seed_behavior: str | None = None, y: int = 0,
                   prompt: str = "a close-up portrait photo of a woman, studio light") -> dict:
    """SD 2.1-base -> FineFace Apply; prompt -> FineFace AU Conditioning (``aus``: its widgets); empty latent
    -> KSampler -> VAE Decode. Returns the nodes by role."""
    checkpoint = g.node("CheckpointLoaderSimple", (20, y), "SD 2.1-base (FineFace's base)", ckpt_name=SD21_CHECKPOINT)
    apply = g.node("MagicFaceFineFaceApply", (360, y), fineface_weights=FINEFACE_WEIGHTS)
    g.link(checkpoint, "MODEL", apply, "model")
    positive = g.node("CLIPTextEncode", (360, y + 180), "Prompt", size=(320, 100), text=prompt)
    negative = g.node("CLIPTextEncode", (360, y + 320), "Negative prompt", size=(320, 100),
                      text="blurry, lowres, deformed, cartoon")
    g.link(checkpoint, "CLIP", positive, "clip")
    g.link(checkpoint, "CLIP", negative, "clip")
    au = g.node("MagicFaceFineFaceAUConditioning", (720, y), size=(340, 520), **aus)
    g.link(positive, "CONDITIONING", au, "conditioning")
    latent = g.node("EmptyLatentImage", (720, y + 560), width=512, height=512, batch_size=batch)
    latent_out = (latent, "LATENT")
    if seed_behavior is not None:  # every row from the same noise: only the AUs differ
        same = g.node("LatentBatchSeedBehavior", (720, y + 720), seed_behavior=seed_behavior)
        g.link(latent, "LATENT", same, "samples")
        latent_out = (same, "LATENT")
    ksampler = g.node("KSampler", (1100, y), size=(320, 330), seed=42, steps=30, cfg=7.5, sampler_name="dpmpp_2m",
                      scheduler="karras")
    g.link(apply, "MODEL", ksampler, "model")
    g.link(au, "CONDITIONING", ksampler, "positive")
    g.link(negative, "CONDITIONING", ksampler, "negative")
    g.link(*latent_out, ksampler, "latent_image")
    decode = g.node("VAEDecode", (1460, y))
    g.link(ksampler, "LATENT", decode, "samples")
    g.link(checkpoint, "VAE", decode, "vae")
    return {"checkpoint": checkpoint, "apply": apply, "au": au, "ksampler": ksampler, "decode": decode}


def fineface_generate(defs: dict) -> dict:
    g = Graph(defs)
    g.node("Note", (20, -230), size=(560, 190), text="Generate a face with a given expression: the sliders set "
                                                     "absolute AUs (here a smile: AU6 2, AU12 3).\n" + FINEFACE_NOTE)
    parts = fineface_front(g, {"AU6_cheek_raiser": 2.0, "AU12_lip_corner_puller": 3.0})
    save = g.node("SaveImage", (1460, 160), size=(400, 420), filename_prefix="fineface/face")
    g.link(parts["decode"], "IMAGE", save, "images")
    return g.workflow()


def fineface_au_grid(defs: dict) -> dict:
    g = Graph(defs)
    g.node("Note", (20, -230), size=(560, 190), text="One AU swept 0..5 on one face: AU Sweep's rows are added to "
                                                     "the sliders, one image per row, all from the same noise (Latent "
                                                     "Batch Seed Behavior: fixed). The latent batch size must equal "
                                                     "the rows (6).\n" + FINEFACE_NOTE)
    sweep = g.node("MagicFaceAUSweep", (1100, 380), au="AU12", start=0.0, stop=5.0, step=1.0)
    parts = fineface_front(g, {}, batch=6, seed_behavior="fixed")
    g.link(sweep, "au_delta", parts["au"], "au_delta")
    save = g.node("SaveImage", (1460, 160), size=(400, 420), filename_prefix="fineface/au12_sweep")
    g.link(parts["decode"], "IMAGE", save, "images")
    return g.workflow()


def fineface_then_edit(defs: dict) -> dict:
    g = Graph(defs)
    parts = fineface_front(g, {"AU12_lip_corner_puller": 2.0}, y=-1000)
    front = shared_front(g, "", "Generate a face with FineFace (top), then edit it with MagicFace: Face Crop -> "
                                "MagicFace -> Paste Back, as with a photo. One AU vocabulary for both: FineFace "
                                "takes absolute AUs, MagicFace a change (here: brows up, jaw open).\n"
                                + FINEFACE_NOTE + NOTE, photo=(parts["decode"], "IMAGE"))
    editor = g.node("MagicFaceAUDeltaEditor", (720, 180), size=(340, 520), AU1_inner_brow_raiser=2.0,
                    AU2_outer_brow_raiser=2.0, AU26_jaw_drop=2.0)
    decode = sampler(g, front, editor, (1100, 0), seed=42)
    paste_and_save(g, front, decode, (1460, 520), "fineface/edited")
    return g.workflow()


WORKFLOWS = {
    "1_edit_portrait.json": edit_portrait,
    "2_expression_transfer.json": expression_transfer,
    "3_au_sweep.json": au_sweep,
    "4_edit_then_upscale.json": edit_then_upscale,
    "5_animate_portrait.json": animate_portrait,
    "6_edit_video.json": edit_video,
    "7_edit_with_ksampler.json": edit_with_ksampler,
    "8_fineface_generate.json": fineface_generate,
    "9_fineface_au_grid.json": fineface_au_grid,
    "10_fineface_then_edit.json": fineface_then_edit,
}


def definitions_for_workflows(pack) -> dict:
    """The newest tested ComfyUI's node definitions and ours, with each built-in node's outputs as the
    oldest has them: newer SaveImage/SaveVideo gained unlinked outputs, which a newer frontend adds
    on loading, and which an older one would show as outputs its node lacks."""
    newest, oldest = load_builtins(NEWEST), load_builtins(OLDEST)
    builtins = {key: {**spec, "output": oldest[key]["output"], "output_name": oldest[key]["output_name"]}
                for key, spec in newest.items()}
    return {**builtins, **our_definitions(pack)}


def main() -> None:
    definitions = definitions_for_workflows(load_pack())
    out = REPO / "example_workflows"
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        (out / name).write_text(json.dumps(build(definitions), indent=1) + "\n")
        print(f"wrote example_workflows/{name}")


if __name__ == "__main__":
    main()
