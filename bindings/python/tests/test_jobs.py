"""The async job API: poll each frame, previews, wait, cancel, results, freed ids; the texture helpers' jobs."""

from __future__ import annotations

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


def test_a_failed_job_raises_with_its_own_message(model: kiln.Model) -> None:
    with model.submit("x", width=7, steps=1) as job:
        assert job.wait(60) == kiln.JobState.FAILED
        with pytest.raises(kiln.JobFailedError) as failed:
            job.result()
        assert "width 7" in failed.value.message
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
