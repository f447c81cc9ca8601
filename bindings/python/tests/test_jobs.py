"""The async job API: poll each frame, previews, wait, cancel, results, freed ids."""

from __future__ import annotations

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

