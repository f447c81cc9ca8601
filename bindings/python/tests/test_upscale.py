"""Upscalers (super-resolution graphs, tests/fixtures/upscaler from tools/make_upscaler_fixture.py):
the goldens' pixels through the binding, alpha, determinism, load errors, cancel from another
thread, bad options, closing with a call in flight, upscale jobs (the blocking call's bytes,
progress in tiles, checks at submit, cancel), and a generation and its upscale as one job."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import PIL.Image
import pytest

import kiln


@pytest.fixture(scope="module")
def fixtures(root: Path) -> Path:
    return root / "tests" / "fixtures" / "upscaler"


@pytest.fixture(scope="module")
def x4(runtime: kiln.Runtime, fixtures: Path) -> Iterator[kiln.Upscaler]:
    """The 4x ESRGAN-style fixture net (dynamic input size, no settings file)."""
    with runtime.load_upscaler(fixtures / "x4") as u:
        yield u


@pytest.fixture(scope="module")
def picture(fixtures: Path) -> np.ndarray[Any, Any]:
    """The fixture picture: (20, 24, 4) uint8, alpha falling from 255 to 40."""
    pixels: np.ndarray[Any, Any] = np.load(fixtures / "image.npy").astype(np.uint8)
    return pixels


#: tests/upscaler.rs's golden tolerance on floats in 0..1 (ONNX Runtime vs torch rounding), in 8-bit steps.
TOL_STEPS = 1e-5 * 255


def golden(fixtures: Path, name: str) -> np.ndarray[Any, Any]:
    """A golden's [3, H, W] float planes in 0..1 as (H, W, 3) values in 0..255, clamped as Kiln clamps."""
    planes: np.ndarray[Any, Any] = np.load(fixtures / "golden" / f"{name}.npy")
    values: np.ndarray[Any, Any] = np.clip(planes, 0, 1).transpose(1, 2, 0) * 255
    return values


def off_golden(ours: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> int:
    """How many of our bytes are not the golden rounded as Kiln rounds (half to even, as np.round),
    not counting those where the golden is within the float tolerance of a half step (there either
    neighbour is right)."""
    near_half = np.abs(want % 1 - 0.5) <= TOL_STEPS
    return int(((ours != np.round(want)) & ~near_half).sum())


def assert_matches(ours: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    """Our bytes are the golden's rounding: within one step everywhere, and exact except next to a half step."""
    assert np.abs(ours.astype(np.float64) - np.round(want)).max() <= 1
    assert np.abs(ours.astype(np.float64) - want).max() <= 0.5 + TOL_STEPS
    assert off_golden(ours, want) == 0


def test_load_and_scale(x4: kiln.Upscaler, fixtures: Path, picture: np.ndarray[Any, Any]) -> None:
    assert x4.scale == 4, "found by Kiln's probe run: no settings file, dynamic shapes"
    # An ONNX file with its settings beside it; the runtime may be closed first.
    with kiln.Runtime() as rt:
        x2 = rt.load_upscaler(fixtures / "x2-fixed.onnx")
    with x2:
        assert x2.scale == 2
        assert repr(x2) == "<kiln.Upscaler 2x>"
        assert x2.upscale(picture).size == (48, 40)


def test_seamless_tiles_match_the_golden_and_are_deterministic(x4: kiln.Upscaler, fixtures: Path,
                                                               picture: np.ndarray[Any, Any]) -> None:
    # 8-pixel tiles with 20 pixels of context (the net sees 19), wrapping on both axes.
    with x4.upscale(picture, tile=8, context=20, seamless=kiln.Seamless.XY) as image:
        assert isinstance(image, kiln.Image) and image.size == (96, 80)
        out = image.to_numpy()
    wrapped = golden(fixtures, "x4_wrap_xy")
    assert_matches(out[..., :3], wrapped)
    # Control: without wrapping, bytes near the borders round the other way (the net's output moves
    # by up to 4e-3 there: within a step, so the check above has to be this exact to tell).
    plain = x4.upscale(picture, tile=8, context=20).to_numpy()
    missed = off_golden(plain[..., :3], wrapped)
    print(f"x4 wrap xy, tiles 8 context 20: 0 bytes off the golden's rounding; without seamless {missed}")
    assert missed > 100
    assert_matches(plain[..., :3], golden(fixtures, "x4_whole"))
    # Alpha went through: the picture's alpha falls to 40, so the result's is not all opaque.
    alpha = out[..., 3]
    assert alpha.min() < 255 and alpha.max() > alpha.min()
    # The same call gives the same bytes; a kiln.Image, a PIL image and a name give the same call.
    assert np.array_equal(x4.upscale(picture, tile=8, context=20, seamless=kiln.Seamless.XY).to_numpy(), out)
    with kiln.Image.from_array(picture) as source:
        assert np.array_equal(x4.upscale(source, tile=8, context=20, seamless="xy").to_numpy(), out)
        assert source.size == (24, 20), "the input is left as it is"
    pil = PIL.Image.fromarray(picture, "RGBA")
    assert np.array_equal(x4.upscale(pil, tile=8, context=20, seamless=3).to_numpy(), out)


def test_alpha_through_the_graph_or_bilinear(x4: kiln.Upscaler, fixtures: Path, picture: np.ndarray[Any, Any]) -> None:
    graph = x4.upscale(picture, tile=8, context=20).to_numpy()
    bilinear = x4.upscale(picture, tile=8, context=20, alpha=kiln.UpscaleAlpha.BILINEAR).to_numpy()
    assert np.array_equal(graph[..., :3], bilinear[..., :3]), "alpha's path leaves RGB alone"
    # Through the graph: the channel mean of the net's output on alpha as a grey image.
    matte = np.clip(np.load(fixtures / "golden" / "x4_alpha.npy").mean(axis=0), 0, 1) * 255
    assert_matches(graph[..., 3], matte)
    # Bilinear: PyTorch's F.interpolate, 4x, half-pixel centres.
    assert_matches(bilinear[..., 3], golden(fixtures, "alpha_bilinear")[..., 0])
    assert not np.array_equal(graph[..., 3], bilinear[..., 3])
    assert np.array_equal(x4.upscale(picture, tile=8, context=20, alpha="bilinear").to_numpy(), bilinear)
    # An opaque picture stays opaque.
    opaque = picture.copy()
    opaque[..., 3] = 255
    assert (x4.upscale(opaque[..., :3], tile=8, context=20).to_numpy()[..., 3] == 255).all()


def test_load_errors_carry_their_status(runtime: kiln.Runtime, root: Path, fixtures: Path) -> None:
    with pytest.raises(kiln.ModelNotFoundError) as missing:
        runtime.load_upscaler(fixtures / "missing")
    assert missing.value.status == kiln.Status.MODEL_NOT_FOUND
    assert "missing" in missing.value.message
    # A matting graph: one image in, but one channel out.
    with pytest.raises(kiln.ModelError) as invalid:
        runtime.load_upscaler(root / "tests" / "fixtures" / "matting" / "fixed" / "model.onnx")
    assert invalid.value.status == kiln.Status.MODEL_INVALID
    assert "output" in invalid.value.message


def test_bad_options_raise_argument_errors_and_leave_it_usable(x4: kiln.Upscaler, picture: np.ndarray[Any, Any]) -> None:
    for options, field in ((dict(alpha=7), "alpha"), (dict(seamless=4), "seamless"), (dict(context=1025), "context")):
        with pytest.raises(kiln.ArgumentError) as bad:
            x4.upscale(picture, **options)
        assert bad.value.status == kiln.Status.INVALID_ARGUMENT, options
        assert field in bad.value.message
        assert isinstance(bad.value, ValueError)
    with pytest.raises(KeyError):
        x4.upscale(picture, alpha="sharp")
    with pytest.raises(ValueError):
        x4.upscale(np.zeros((4, 4), np.uint8))
    assert x4.upscale(picture, tile=0, context=0).size == (96, 80)


def big_picture() -> np.ndarray[Any, Any]:
    return (np.arange(256 * 256 * 4) % 251).astype(np.uint8).reshape(256, 256, 4)


def test_cancel_from_another_thread_then_a_later_call_works(x4: kiln.Upscaler, picture: np.ndarray[Any, Any]) -> None:
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["image"] = x4.upscale(big_picture(), tile=8, context=20)
        except Exception as e:  # handed to the test thread
            result["error"] = e

    worker = threading.Thread(target=work)
    started = time.monotonic()
    worker.start()
    # The upscale takes far longer than this loop's period; cancelling before it enters Kiln does not
    # reach it, so keep cancelling until it returns (ctypes releases the GIL during the call).
    while worker.is_alive():
        x4.cancel()
        worker.join(0.02)
        assert time.monotonic() - started < 120, "the upscale did not stop"
    print(f"cancelled after {time.monotonic() - started:.2f} s")
    assert "image" not in result, "the upscale finished before it was cancelled"
    assert isinstance(result["error"], kiln.CancelledError)
    assert result["error"].status == kiln.Status.CANCELLED
    x4.cancel()  # nothing in flight: a no-op
    assert x4.upscale(picture, tile=0, context=0).size == (96, 80)


def test_close_cancels_a_call_in_flight_and_is_idempotent(runtime: kiln.Runtime, fixtures: Path) -> None:
    upscaler = runtime.load_upscaler(fixtures / "x4")
    errors: list[Exception] = []

    def work() -> None:
        try:
            upscaler.upscale(big_picture(), tile=8, context=20)
        except Exception as e:
            errors.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    started = time.monotonic()
    while not upscaler._active:  # until the call holds the handle (it may not have entered Kiln yet)
        assert worker.is_alive() and time.monotonic() - started < 60
        time.sleep(0.001)
    upscaler.close()  # waits for the call, which is cancelled, before freeing
    worker.join(60)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], kiln.CancelledError)
    upscaler.close()
    assert repr(upscaler) == "<kiln.Upscaler closed>"
    with pytest.raises(ValueError):
        upscaler.scale
    with pytest.raises(ValueError):
        upscaler.cancel()


def test_upscale_jobs_give_the_blocking_bytes_and_count_tiles(x4: kiln.Upscaler, picture: np.ndarray[Any, Any]) -> None:
    opaque = picture.copy()
    opaque[..., 3] = 255
    # 24x20 in 8-pixel tiles: 3x3 graph runs; with transparency and alpha through the graph, twice that.
    for source, options, runs in ((opaque, {}, 9), (picture, {}, 18), (picture, {"alpha": "bilinear"}, 9)):
        want = x4.upscale(source, tile=8, context=20, seamless="xy", **options).to_numpy()
        with x4.submit(source, tile=8, context=20, seamless="xy", **options) as job:
            assert job.poll().total_steps == runs, "the total is known from submission on"
            assert np.array_equal(job.result(60), want), "the job gives upscale's bytes"
            p = job.poll()
            assert (p.state, p.step, p.total_steps) == (kiln.JobState.SUCCEEDED, runs, runs)
            assert p.preview_step == 0 and job.preview() is None, "an upscale job makes no previews"
            assert job.error_message == ""


def test_the_image_and_the_upscaler_may_close_right_after_submit(runtime: kiln.Runtime, fixtures: Path,
                                                                 x4: kiln.Upscaler,
                                                                 picture: np.ndarray[Any, Any]) -> None:
    want = x4.upscale(picture, tile=8, context=20).to_numpy()
    upscaler = runtime.load_upscaler(fixtures / "x4")
    source = kiln.Image.from_array(picture)
    job = upscaler.submit(source, tile=8, context=20, priority=3)
    source.close()  # copied at submit
    upscaler.close()  # the job holds the graph: close() leaves it to run
    with job:
        assert np.array_equal(job.result(60), want)
    with pytest.raises(ValueError):
        upscaler.submit(picture)


def test_upscale_jobs_check_their_arguments_at_submit(x4: kiln.Upscaler, picture: np.ndarray[Any, Any]) -> None:
    for options, field in ((dict(alpha=7), "alpha"), (dict(seamless=4), "seamless"), (dict(context=1025), "context")):
        with pytest.raises(kiln.ArgumentError) as bad:
            x4.submit(picture, **options)
        assert bad.value.status == kiln.Status.INVALID_ARGUMENT, options
        assert field in bad.value.message
    with pytest.raises(kiln.ArgumentError) as too_big:
        x4.submit(np.full((1, 4097, 4), 255, np.uint8))  # 16388 pixels wide at 4x
    assert too_big.value.status == kiln.Status.INVALID_SIZE
    assert "16384" in too_big.value.message
    with pytest.raises(KeyError):
        x4.submit(picture, alpha="sharp")
    with x4.submit(picture, tile=0, context=0) as job:  # nothing queued before: it runs at once
        assert job.result(60).shape == (80, 96, 4)


def wait_running(job: kiln.Job) -> kiln.Progress:
    """Polls until the job has finished at least one graph run."""
    started = time.monotonic()
    while True:
        p = job.poll()
        if p.state == kiln.JobState.RUNNING and p.step >= 1:
            return p
        assert not p.done and time.monotonic() - started < 60, p
        time.sleep(0.001)


def test_cancel_a_running_upscale_job_by_job_or_by_upscaler(x4: kiln.Upscaler, picture: np.ndarray[Any, Any]) -> None:
    for by_upscaler in (False, True):
        with x4.submit(big_picture(), tile=8, context=20) as long, x4.submit(picture, tile=8, context=20) as after:
            running = wait_running(long)
            assert after.poll().state == kiln.JobState.QUEUED, "behind the long one (one job worker here)"
            assert running.total_steps == 32 * 32 * 2, "256x256 in 8-pixel tiles, alpha through the graph"
            if by_upscaler:
                x4.cancel()  # stops the running job; a queued one still runs
            else:
                long.cancel()
            assert long.wait(60) == kiln.JobState.CANCELLED
            with pytest.raises(kiln.CancelledError) as cancelled:
                long.result()
            assert cancelled.value.status == kiln.Status.CANCELLED
            p = long.poll()
            assert p.step < p.total_steps, f"stopped before the end: {p}"
            assert after.result(60).shape == (80, 96, 4), f"the other job ran (by upscaler: {by_upscaler})"


#: DDIM makes one U-Net call per step, so a generation's progress counts 4.
UPSCALED: kiln.GenerateOptions = {"steps": 4, "seed": 5, "scheduler": "ddim"}


def test_a_generation_and_its_upscale_run_as_one_job(runtime: kiln.Runtime, fixtures: Path, model: kiln.Model,
                                                     x4: kiln.Upscaler) -> None:
    total = 4 + 2 * 2  # four U-Net calls, then the 64x64 picture in 2x2 tiles of 32 pixels
    with model.seamless(kiln.Seamless.XY) as view:
        with view.generate("mossy cobblestone", **UPSCALED) as image:
            want = x4.upscale(image, tile=32, seamless="xy").to_numpy()
        upscaler = runtime.load_upscaler(fixtures / "x4")
        job = view.submit_upscaled("mossy cobblestone", upscaler, tile=32, preview_interval=2, **UPSCALED)
        assert job.poll().total_steps == total, "the total is known from submission on"
        upscaler.close()  # the job holds the model and the graph: both may go right after submit
    with job:
        out = job.result(60)
        assert out.shape == (256, 256, 4)
        assert np.array_equal(out, want), "the view's generation, upscaled wrapping on x and y"
        p = job.poll()
        assert (p.state, p.step, p.total_steps, p.preview_step) == (kiln.JobState.SUCCEEDED, total, total, 4)
        preview = job.preview()
        assert preview is not None and preview.step == 4, "previews come from the generation"
        assert job.error_message == ""
    # A plain model's axes: no wrapping (the view's bytes differ at the borders).
    with model.generate("mossy cobblestone", **UPSCALED) as image:
        plain = x4.upscale(image, tile=32).to_numpy()
    with model.submit_upscaled("mossy cobblestone", x4, tile=32, **UPSCALED) as job:
        assert np.array_equal(job.result(60), plain)
    assert not np.array_equal(plain, want)


def test_upscaled_jobs_check_their_arguments_at_submit(runtime: kiln.Runtime, fixtures: Path, model: kiln.Model,
                                                       x4: kiln.Upscaler) -> None:
    with model.seamless(kiln.Seamless.XY) as view:
        with pytest.raises(kiln.ArgumentError) as bad_size:
            view.submit_upscaled("x", x4, tile=32, width=72, **UPSCALED)  # not a multiple of 16
        assert bad_size.value.status == kiln.Status.INVALID_SIZE
        assert "multiple of" in bad_size.value.message
        with pytest.raises(kiln.ArgumentError) as too_big:
            view.submit_upscaled("x", x4, width=8192, **UPSCALED)  # 32768 pixels wide at 4x
        assert too_big.value.status == kiln.Status.INVALID_SIZE
        assert "16384" in too_big.value.message
        with pytest.raises(kiln.ArgumentError) as bad_context:
            view.submit_upscaled("x", x4, context=1025, **UPSCALED)
        assert bad_context.value.status == kiln.Status.INVALID_ARGUMENT
        assert "context" in bad_context.value.message
        with pytest.raises(KeyError):
            view.submit_upscaled("x", x4, alpha="sharp", **UPSCALED)
        with pytest.raises(TypeError):  # no seamless argument: the model's axes are used
            view.submit_upscaled("x", x4, seamless="xy", **UPSCALED)  # type: ignore[call-arg]
        assert x4._active == 0, "the upscaler's handle is let go after each call"
        closed = runtime.load_upscaler(fixtures / "x4")
        closed.close()
        with pytest.raises(ValueError):
            view.submit_upscaled("x", closed, **UPSCALED)
        # Nothing was queued: a job still runs at once.
        with view.submit_upscaled("x", x4, tile=0, context=0, steps=1) as job:
            assert job.result(60).shape == (256, 256, 4)
