"""The async job API: poll each frame, previews, wait, cancel, results, freed ids; the texture helpers' jobs;
model loads, LoRA switches, seamless views and upscaler loads as jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln



def test_poll_every_frame_until_done_then_same_pixels_as_generate(model: kiln.Model) -> None:
    reference = model.generate("weathered oak planks", steps=4, seed=7).to_numpy()
    with model.submit("weathered oak planks", preview_interval=1, steps=4, seed=7) as job:
        frames = 0
        while True:  # one iteration = one frame of a game or tool loop
            progress = job.poll()
            frames += 1
            if progress.done:
                break
            job.wait(0.005)  # stands in for rendering a frame
        print(f"job done after {frames} polls: {progress}")
        assert progress.state == kiln.JobState.SUCCEEDED
        assert progress.step == progress.total_steps > 0
        assert np.array_equal(job.result(), reference)
        assert np.array_equal(np.asarray(job.result_pil()), reference)
        preview = job.preview()
        assert preview is not None and preview.step > 0
        assert preview.pixels.shape == (progress.preview_height, progress.preview_width, 4)
        assert job.error_message == ""


def test_cancel_a_long_job(model: kiln.Model) -> None:
    job = model.submit("x", steps=900, seed=1)
    assert job.preview() is None
    job.cancel()
    assert job.wait(60) == kiln.JobState.CANCELLED
    with pytest.raises(kiln.CancelledError) as cancelled:
        job.result()
    assert cancelled.value.status == kiln.Status.CANCELLED
    job.close()
    job.close()


def test_a_bad_request_is_refused_at_submit(model: kiln.Model) -> None:
    with pytest.raises(kiln.ArgumentError) as bad_size:
        model.submit("x", width=7, steps=1)
    assert bad_size.value.status == kiln.Status.INVALID_SIZE
    assert "width 7" in bad_size.value.message
    with pytest.raises(kiln.ArgumentError) as bad_guidance:
        model.submit("x", guidance_scale=float("nan"), steps=1)
    assert bad_guidance.value.status == kiln.Status.INVALID_ARGUMENT


def test_a_failed_job_raises_with_its_own_message(model: kiln.Model) -> None:
    # img2img whose strength leaves no step to run fails in the job.
    still = np.zeros((64, 64, 4), dtype=np.uint8)
    with model.submit("x", init_image=still, strength=0.1, steps=2) as job:
        assert job.wait(60) == kiln.JobState.FAILED
        with pytest.raises(kiln.JobFailedError) as failed:
            job.result()
        assert "runs no denoising step" in failed.value.message
        assert failed.value.message == job.error_message


def test_freed_ids_are_a_status_not_a_crash(model: kiln.Model) -> None:
    job = model.submit("x", steps=1)
    job_id = job.id
    job.close()
    stale = kiln.Job(job_id)
    with pytest.raises(kiln.InvalidHandleError):
        stale.poll()
    with pytest.raises(kiln.InvalidHandleError):
        stale.close()



def ramp() -> np.ndarray[Any, Any]:
    """A 64x64 RGB diagonal colour ramp with hard wrap seams (tests/texture.rs's)."""
    y, x = np.mgrid[0:64, 0:64]
    return np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)


#: DDIM makes one U-Net call per step, so progress counts 3.
TEXTURE: kiln.GenerateOptions = {"steps": 3, "strength": 1.0, "scheduler": "ddim", "seed": 5}


def test_texture_jobs_give_the_blocking_calls_bytes_with_progress_and_previews(model: kiln.Model) -> None:
    picture = ramp()
    with model.make_tileable(picture, "sandstone", band=16, **TEXTURE) as image:
        tiled = image.to_numpy()
    with model.extend_texture(picture, "sandstone", top=64, **TEXTURE) as image:
        extended = image.to_numpy()
    assert extended.shape == (128, 64, 4)
    source = kiln.Image.from_array(picture)
    tile_job = model.submit_make_tileable(source, "sandstone", band=16, preview_interval=1, **TEXTURE)
    extend_job = model.submit_extend_texture(source, "sandstone", top=64, priority=1, preview_interval=1, **TEXTURE)
    source.close()  # the picture was copied at submit
    with tile_job, extend_job:
        assert np.array_equal(tile_job.result(60), tiled), "the job gives make_tileable's bytes"
        assert np.array_equal(extend_job.result(60), extended), "the job gives extend_texture's bytes"
        for job, preview_size in ((tile_job, (8, 8)), (extend_job, (8, 16))):
            p = job.poll()
            assert (p.state, p.step, p.total_steps) == (kiln.JobState.SUCCEEDED, 3, 3), "U-Net calls"
            assert (p.preview_step, p.preview_width, p.preview_height) == (3, *preview_size)
            preview = job.preview()
            assert preview is not None and preview.pixels.shape == (preview_size[1], preview_size[0], 4)


def test_texture_jobs_check_their_arguments_at_submit(model: kiln.Model) -> None:
    picture = ramp()
    for band in (0, 32):
        with pytest.raises(kiln.ArgumentError) as bad:
            model.submit_make_tileable(picture, "sandstone", band=band, **TEXTURE)
        assert bad.value.status == kiln.Status.INVALID_ARGUMENT
        assert f"band {band}" in bad.value.message
    with pytest.raises(kiln.ArgumentError) as bad:
        model.submit_extend_texture(picture, "sandstone", left=5, **TEXTURE)
    assert bad.value.status == kiln.Status.INVALID_SIZE
    assert "multiple of" in bad.value.message
    with pytest.raises(TypeError):
        model.submit_extend_texture(picture, "sandstone", top=64, no_such_option=1)  # type: ignore[call-arg]
    # Nothing was queued: the model still runs a job at once.
    with model.submit_extend_texture(picture, "sandstone", right=16, **TEXTURE) as job:
        assert job.result(60).shape == (64, 80, 4)


# Model loads, LoRA switches, seamless views and upscaler loads as jobs (kiln_job_submit_model_load,
# kiln_job_submit_with_adapters, kiln_job_submit_seamless, kiln_job_model; kiln_job_submit_upscaler_load,
# kiln_job_upscaler). DDIM, 3 steps, seed 9: tests/job_kinds.rs's generation.
MODEL_JOB: kiln.GenerateOptions = {"steps": 3, "seed": 9, "scheduler": "ddim"}


def pixels(model: kiln.Model) -> np.ndarray[Any, Any]:
    with model.generate("brick wall", **MODEL_JOB) as image:
        return image.to_numpy()


def test_a_load_job_gives_load_models_model(runtime: kiln.Runtime, model: kiln.Model, root: Path) -> None:
    with runtime.submit_load_model(root / "tests" / "fixtures" / "tiny-sd", priority=1) as job:
        assert job.poll().total_steps >= 1  # 1 until the job plans its graphs, then their KiB
        loaded = job.model(120)
        p = job.poll()
        assert (p.state, p.step, p.preview_step) == (kiln.JobState.SUCCEEDED, p.total_steps, 0) and p.total_steps > 1
        again = job.model()
        assert again.handle != loaded.handle, "a handle of its own per call"
        again.close()
        with pytest.raises(kiln.ArgumentError) as no_image:
            job.result()
        assert no_image.value.status == kiln.Status.INVALID_ARGUMENT and "made a model" in no_image.value.message
    with loaded:  # outlives its job, and keeps the runtime as a blocking load's model does
        assert loaded._runtime is runtime
        assert np.array_equal(pixels(loaded), pixels(model)), "the job's model generates load_model's bytes"


def test_a_load_job_takes_load_models_options_and_outlives_its_runtime(root: Path) -> None:
    tiny = root / "tests" / "fixtures" / "tiny-sd"
    with kiln.Runtime() as rt:
        job = rt.submit_load_model(tiny, seamless=kiln.Seamless.XY)
        with rt.load_model(tiny, seamless=kiln.Seamless.XY) as direct:
            want = pixels(direct)
    with job, job.model(120) as tiled:  # the runtime was closed while the job ran
        assert np.array_equal(pixels(tiled), want), "seamless reaches the job's load"


def test_a_lora_job_gives_with_loras_model(model: kiln.Model, root: Path) -> None:
    lora = (root / "tests" / "fixtures" / "lora" / "detail.kohya.safetensors", 0.8)
    with model.submit_with_loras([lora]) as job:
        styled = job.model(120)
        p = job.poll()
        # KiB of the U-Net and text encoder the switch remakes, all done.
        assert p.step == p.total_steps > 1
    with styled, model.with_loras([lora]) as blocking:
        assert styled._runtime is model._runtime
        assert styled.loras == blocking.loras and styled.loras[0][1] == pytest.approx(0.8)
        styled_pixels = pixels(styled)
        assert np.array_equal(styled_pixels, pixels(blocking)), "the job's model is with_loras'"
    assert not np.array_equal(styled_pixels, pixels(model)), "and the LoRA changed the image"
    assert model.loras == []


def test_a_seamless_job_gives_seamless_view(runtime: kiln.Runtime, model: kiln.Model, root: Path) -> None:
    own = runtime.load_model(root / "tests" / "fixtures" / "tiny-sd")
    with own:
        job = own.submit_seamless(kiln.Seamless.XY)
    # The model it came from was closed right after submit: the job holds what it needs.
    with job:
        assert job.poll().total_steps >= 1  # 1 until the job plans its graphs, then their KiB
        tiled = job.model(120)
        p = job.poll()
        assert (p.state, p.step, p.preview_step) == (kiln.JobState.SUCCEEDED, p.total_steps, 0) and p.total_steps > 1
        assert job.error_message == ""
    with tiled, model.seamless(kiln.Seamless.XY) as blocking:
        assert tiled._runtime is runtime
        tiled_pixels = pixels(tiled)
        assert np.array_equal(tiled_pixels, pixels(blocking)), "the job's view is seamless()'"
    assert not np.array_equal(tiled_pixels, pixels(model)), "and it tiles: not the plain model's image"
    # The forms seamless() takes (an int too); anything else is refused at submit, nothing queued.
    with model.submit_seamless(3, priority=1) as again, again.model(120) as view:  # type: ignore[arg-type]
        assert np.array_equal(pixels(view), tiled_pixels)
    with pytest.raises(ValueError):
        model.submit_seamless(9)  # type: ignore[arg-type]


def test_an_upscaler_load_job_gives_load_upscalers_upscaler(runtime: kiln.Runtime, model: kiln.Model,
                                                            root: Path) -> None:
    fixtures = root / "tests" / "fixtures" / "upscaler"
    picture = np.load(fixtures / "image.npy").astype(np.uint8)  # (20, 24, 4), alpha falling from 255 to 40
    with pytest.raises(kiln.ModelNotFoundError) as missing:
        runtime.submit_load_upscaler(fixtures / "missing")  # nothing queued: no job to close
    assert missing.value.status == kiln.Status.MODEL_NOT_FOUND and "missing" in missing.value.message

    with kiln.Runtime() as rt:
        job = rt.submit_load_upscaler(fixtures / "x4", priority=1)
    # The runtime was closed right after submit: the job holds what it needs of it.
    with job:
        assert job.poll().total_steps >= 1  # 1 until the job plans its graphs, then their KiB
        loaded = job.upscaler(120)
        p = job.poll()
        assert (p.state, p.step, p.preview_step) == (kiln.JobState.SUCCEEDED, p.total_steps, 0) and p.total_steps > 1
        assert job.preview() is None and job.error_message == ""
        again = job.upscaler()
        assert again.handle != loaded.handle, "a handle of its own per call"
        again.close()
        with pytest.raises(kiln.ArgumentError) as no_model:
            job.model()
        assert no_model.value.status == kiln.Status.INVALID_ARGUMENT and "kiln_job_upscaler" in no_model.value.message
        with pytest.raises(kiln.ArgumentError) as no_image:
            job.result()
        assert no_image.value.status == kiln.Status.INVALID_ARGUMENT
    with loaded, runtime.load_upscaler(fixtures / "x4") as blocking:  # outlives its job
        assert loaded.scale == 4
        with loaded.upscale(picture, tile=8, context=20) as ours, blocking.upscale(picture, tile=8, context=20) as want:
            assert ours.to_numpy().shape == (80, 96, 4)
            assert np.array_equal(ours.to_numpy(), want.to_numpy()), "the job's upscaler is load_upscaler's"

    # The other way round: a model load and an image job have no upscaler.
    with runtime.submit_load_model(root / "tests" / "fixtures" / "tiny-sd") as model_job, \
            model.submit("brick wall", **MODEL_JOB) as image_job:
        for other in (model_job, image_job):
            with pytest.raises(kiln.ArgumentError) as no_upscaler:
                other.upscaler(120)
            assert no_upscaler.value.status == kiln.Status.INVALID_ARGUMENT


def test_model_jobs_check_arguments_at_submit_and_files_in_the_job(runtime: kiln.Runtime, model: kiln.Model,
                                                                   root: Path) -> None:
    with pytest.raises(kiln.ModelNotFoundError) as missing:
        runtime.submit_load_model("/nonexistent/model")  # nothing queued: no job to close
    assert missing.value.status == kiln.Status.MODEL_NOT_FOUND and "/nonexistent/model" in missing.value.message
    with pytest.raises(kiln.ArgumentError) as nan:
        model.submit_with_loras([(root / "tests" / "fixtures" / "lora" / "detail.kohya.safetensors", float("nan"))])
    assert nan.value.status == kiln.Status.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        model.submit_with_loras([("x.safetensors",)])  # type: ignore[list-item]

    with model.submit_with_loras([("/nonexistent/style.safetensors", 1.0)]) as job:
        assert job.wait(60) == kiln.JobState.FAILED
        with pytest.raises(kiln.JobFailedError) as failed:
            job.model()
        assert "/nonexistent/style.safetensors" in failed.value.message
        assert failed.value.message == job.error_message
        assert failed.value.status == kiln.Status.INVALID_ARGUMENT  # what asking for its model returned
    with runtime.submit_load_model(root / "tests" / "fixtures" / "upscaler") as job:  # not a model folder
        assert job.wait(60) == kiln.JobState.FAILED
        with pytest.raises(kiln.JobFailedError):
            job.model()


def test_an_image_job_has_no_model_and_a_queued_load_is_busy_then_cancelled(runtime: kiln.Runtime,
                                                                            model: kiln.Model, root: Path) -> None:
    with model.submit("brick wall", **MODEL_JOB) as image_job:
        image_job.wait(60)
        with pytest.raises(kiln.ArgumentError) as no_model:
            image_job.model()
        assert no_model.value.status == kiln.Status.INVALID_ARGUMENT and "made an image" in no_model.value.message
    # The session runtime has one job worker: a load queued behind a long generation waits.
    with model.submit("x", steps=900) as long:
        while long.poll().step < 1:
            long.wait(0.005)
        with runtime.submit_load_model(root / "tests" / "fixtures" / "tiny-sd") as load:
            with pytest.raises(kiln.BusyError):
                load.model(0)
            load.cancel()
            long.cancel()
            with pytest.raises(kiln.CancelledError):
                load.model(60)
            assert load.poll().step == 0, "a cancelled queued load never runs"
