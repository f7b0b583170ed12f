import pytest
import torch

from magicface_core import SAMPLER_NAMES, AUInputError, AUVector, ImageInputError
from tests.support.factories import TINY, random_inputs
from tests.support.reference import NaiveMagicFace


def _relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("sampler", ["uni_pc", "ddim"])
def test_sample_equals_the_authors_loop(tiny_model, tiny_parts, sampler):
    inputs = random_inputs(TINY, batch=2)
    au = AUVector.from_dicts([{"AU12": 3, "AU6": 2}, {"AU4": -2, "AU1": 1}])
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    ours = tiny_model.sample(features, inputs["cond_latents"], au, inputs["text_embeds"], steps=50, guidance=3.0,
                             sampler=sampler, noise=inputs["noise"])
    reference = NaiveMagicFace(tiny_parts).sample(inputs["id_latents"], inputs["cond_latents"], au.to_tensor(),
                                                  inputs["text_embeds"], inputs["noise"], steps=50, guidance=3.0,
                                                  scheduler=sampler)
    assert ours.shape == (2, 4, 8, 8)
    assert _relative_error(ours, reference) < 1e-5


def test_batch_item_equals_single_edit_and_identity_is_encoded_once(tiny_model):
    inputs = random_inputs(TINY)
    aus = AUVector.from_dicts([{"AU12": 3}, {"AU12": -3}, {"AU26": 4}])
    calls = []
    original = tiny_model.injection.identity_kv
    tiny_model.injection.identity_kv = lambda f: calls.append(1) or original(f)
    try:
        features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
        batch = tiny_model.sample(features, inputs["cond_latents"], aus, inputs["text_embeds"], steps=8, seed=3)
    finally:
        del tiny_model.injection.identity_kv
    assert calls == [1]  # identity keys/values computed once for 3 edits x 8 steps x 2 branches
    single = tiny_model.sample(features, inputs["cond_latents"], aus[1], inputs["text_embeds"], steps=8, seed=3)
    assert torch.allclose(batch[1:2], single, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


def test_guidance_one_is_the_conditional_branch(tiny_model, tiny_parts):
    inputs = random_inputs(TINY)
    au = AUVector.from_dict({"AU9": 2})
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    ours = tiny_model.sample(features, inputs["cond_latents"], au, inputs["text_embeds"], steps=10, guidance=1.0,
                             noise=inputs["noise"])
    reference = NaiveMagicFace(tiny_parts).sample(inputs["id_latents"], inputs["cond_latents"], au.to_tensor(),
                                                  inputs["text_embeds"], inputs["noise"], steps=10, guidance=1.0)
    assert _relative_error(ours, reference) < 1e-5


def test_seed_is_reproducible_and_noise_is_deterministic(tiny_model):
    inputs = random_inputs(TINY)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    run = lambda **kw: tiny_model.sample(features, inputs["cond_latents"], AUVector.from_dict({"AU1": 1}),
                                         inputs["text_embeds"], steps=5, **kw)
    assert torch.equal(run(seed=11), run(seed=11))
    assert not torch.equal(run(seed=11), run(seed=12))
    assert torch.equal(run(noise=inputs["noise"]), run(noise=inputs["noise"]))
    per_item = tiny_model.sample(features, inputs["cond_latents"], AUVector.zeros(2), inputs["text_embeds"],
                                 steps=3, seed=1, per_item_noise=True)
    assert not torch.allclose(per_item[0], per_item[1])


def _scheduler_built_by_hand(sampler: str):
    """Each sampler as its diffusers documentation builds it on SD 1.5, independently of make_scheduler."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler

    from tests.support.reference import SD15_SCHEDULER

    return {
        "uni_pc": lambda: UniPCMultistepScheduler(**SD15_SCHEDULER, final_sigmas_type="sigma_min"),
        "ddim": lambda: DDIMScheduler(**SD15_SCHEDULER, clip_sample=False, set_alpha_to_one=False),
        "euler": lambda: EulerDiscreteScheduler(**SD15_SCHEDULER),
        "euler_karras": lambda: EulerDiscreteScheduler(**SD15_SCHEDULER, use_karras_sigmas=True),
        "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**SD15_SCHEDULER, algorithm_type="dpmsolver++", solver_order=2),
        "dpmpp_2m_karras": lambda: DPMSolverMultistepScheduler(**SD15_SCHEDULER, algorithm_type="dpmsolver++",
                                                               solver_order=2, use_karras_sigmas=True),
    }[sampler]()


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_equals_the_plain_loop_with_that_scheduler(tiny_model, tiny_parts, sampler):
    inputs = random_inputs(TINY)
    au = AUVector.from_dict({"AU12": 2, "AU4": -1})
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    out = tiny_model.sample(features, inputs["cond_latents"], au, inputs["text_embeds"], steps=6,
                            sampler=sampler, noise=inputs["noise"])
    reference = NaiveMagicFace(tiny_parts).sample(inputs["id_latents"], inputs["cond_latents"], au.to_tensor(),
                                                  inputs["text_embeds"], inputs["noise"], steps=6, guidance=3.0,
                                                  scheduler=_scheduler_built_by_hand(sampler))
    assert _relative_error(out, reference) < 1e-5


def test_callback_reports_progress_and_can_stop(tiny_model):
    inputs = random_inputs(TINY)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    seen = []
    tiny_model.sample(features, inputs["cond_latents"], AUVector.zeros(), inputs["text_embeds"], steps=7, seed=0,
                      callback=lambda i, n, x: seen.append((i, n, tuple(x.shape))))
    assert seen == [(i, 7, (1, 4, 8, 8)) for i in range(1, 8)]

    class Stop(Exception):
        pass

    def stop_at_three(i, n, x):
        if i == 3:
            raise Stop

    with pytest.raises(Stop):
        tiny_model.sample(features, inputs["cond_latents"], AUVector.zeros(), inputs["text_embeds"], steps=7,
                          seed=0, callback=stop_at_three)
    # Nothing of that edit stays on the model: the processors hold no identity.
    assert all(set(vars(p)) == {"index"} for p in tiny_model.injection.processors)


def test_bad_inputs_get_clear_errors(tiny_model):
    inputs = random_inputs(TINY)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    with pytest.raises(AUInputError):
        tiny_model.sample(features, inputs["cond_latents"], torch.zeros(1, 11), inputs["text_embeds"], steps=2)
    with pytest.raises(ImageInputError, match="batch sizes"):
        tiny_model.sample(features, inputs["cond_latents"].expand(3, -1, -1, -1), AUVector.zeros(2),
                          inputs["text_embeds"], steps=2)
    with pytest.raises(ImageInputError, match="same size"):
        tiny_model.sample(features, torch.zeros(1, 4, 16, 16), AUVector.zeros(), inputs["text_embeds"], steps=2)
    with pytest.raises(ImageInputError, match="latents"):
        tiny_model.encode_identity(torch.zeros(1, 3, 8, 8), inputs["text_embeds"])


def test_model_offload_gives_the_same_edit_and_leaves_weights_on_the_cpu(tiny_checkpoint):
    from magicface_core import MagicFace

    inputs = random_inputs(TINY)
    plain = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    offloaded = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32).enable_model_offload("cpu")
    outputs = []
    for model in (plain, offloaded):
        features = model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
        outputs.append(model.sample(features, inputs["cond_latents"], AUVector.from_dict({"AU2": 1}),
                                    inputs["text_embeds"], steps=4, noise=inputs["noise"]))
    assert torch.equal(outputs[0], outputs[1])
    assert offloaded.denoiser.conv_in.weight.device.type == "cpu"


def test_compile_routes_sampling_through_the_compiled_denoiser(tiny_checkpoint, tmp_path, monkeypatch):
    """torch.compile itself takes a minute on a CPU (see docs/PERFORMANCE.md); here it is replaced by
    a wrapper that counts calls, to check what MagicFace.compile changes and what it leaves alone."""
    from magicface_core import MagicFace

    model = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    inputs = random_inputs(TINY)
    features = model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    run = lambda: model.sample(features, inputs["cond_latents"], AUVector.from_dict({"AU9": 1}), inputs["text_embeds"],
                               steps=3, noise=inputs["noise"])
    eager = run()
    calls, options_seen = [], []

    def fake_compile(module, **options):
        options_seen.append(options)
        return lambda *args, **kwargs: calls.append(1) or module(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", fake_compile)
    model.compile(mode="max-autotune")
    assert torch.equal(run(), eager)
    assert options_seen == [{"mode": "max-autotune"}] and len(calls) == 3
    model.save_pretrained(tmp_path / "m.safetensors")  # the weights are the denoiser's, not a wrapper's
    assert MagicFace.from_pretrained(tmp_path / "m.safetensors", device="cpu").denoiser.conv_in.in_channels == 8


def _edits(model, seeds):
    """One edit per seed, each with its own identity (the seed draws the identity latents too)."""
    results = {}
    for seed in seeds:
        inputs = random_inputs(TINY, seed=seed)
        features = model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
        results[seed] = model.sample(features, inputs["cond_latents"], AUVector.from_dict({"AU12": 2}),
                                     inputs["text_embeds"], steps=6, noise=inputs["noise"])
    return results


def test_two_threads_on_one_model_give_the_sequential_results(tiny_model):
    import threading

    seeds = [[1, 3, 5], [2, 4, 6]]
    sequential = _edits(tiny_model, [s for group in seeds for s in group])
    threaded, errors, start = {}, [], threading.Barrier(2)

    def work(group):
        try:
            start.wait()
            threaded.update(_edits(tiny_model, group))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(group,)) for group in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for seed, latents in sequential.items():
        assert torch.equal(threaded[seed], latents), seed
    assert not torch.equal(sequential[1], sequential[2])  # the identities really differ


def test_an_edit_nested_in_a_callback_changes_neither_edit(tiny_model):
    expected = _edits(tiny_model, [7, 8])
    inner = {}

    def nested(step, total, latents):
        if step == 3:  # encode and sample another identity in the middle of this edit
            inner.update(_edits(tiny_model, [8]))

    inputs = random_inputs(TINY, seed=7)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    outer = tiny_model.sample(features, inputs["cond_latents"], AUVector.from_dict({"AU12": 2}),
                              inputs["text_embeds"], steps=6, noise=inputs["noise"], callback=nested)
    assert torch.equal(outer, expected[7]) and torch.equal(inner[8], expected[8])


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_karras"])
def test_denoised_estimate_is_the_schedulers_own_prediction_of_the_clean_latents(name):
    """What the callback (and so the live preview) shows: checked against the schedulers that report it."""
    from magicface_core.model.schedulers import denoised_estimate, make_scheduler

    scheduler = make_scheduler(name)
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = torch.randn(1, 4, 8, 8, generator=generator)
        estimate = denoised_estimate(scheduler, t, model_input, eps)
        out = scheduler.step(eps, t, latents)
        torch.testing.assert_close(estimate, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        latents = out.prev_sample

