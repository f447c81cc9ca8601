"""ControlNet: the tiny fixture with tests/fixtures/controlnet added. A painted height map's Canny edges
change the image; Kiln's own Canny preprocessing of the painted map gives the same pixels as passing the
edges; a job copies the controls; a missing ControlNet raises ModelNotFoundError and the model stays
usable."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import kiln


@pytest.fixture(scope="module")
def cn_model(runtime: kiln.Runtime, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[kiln.Model]:
    folder = tmp_path_factory.mktemp("controlnet-model")
    for part in ("tiny-sd", "controlnet"):
        shutil.copytree(root / "tests" / "fixtures" / part, folder, dirs_exist_ok=True)
    with runtime.load_model(folder) as m:
        yield m


def painted_height_map() -> np.ndarray:
    """A raised disc on a ramp, as examples/c/controlnet.c paints it (RGBA)."""
    y, x = np.mgrid[0:64, 0:64]
    v = np.where((x - 32) ** 2 + (y - 30) ** 2 < 18 * 18, 230, x * 2).astype(np.uint8)
    return np.dstack([v, v, v, np.full_like(v, 255)])


def test_preprocessors() -> None:
    with kiln.Image.from_array(painted_height_map()) as height:
        with height.canny(100, 200) as edges, height.height_to_depth() as depth:
            e, d = edges.to_numpy(), depth.to_numpy()
        with pytest.raises(kiln.ArgumentError):
            height.canny(-1, 200)
    white = int((e[..., 0] == 255).sum())
    print(f"{white} edge pixels; depth spans {d[..., 0].min()}..{d[..., 0].max()}")
    assert 0 < white < 64 * 64 // 2
    assert set(np.unique(e[..., 0])) <= {0, 255}
    assert d[..., 0].min() == 0 and d[..., 0].max() == 255


def test_controlnet_shapes_the_image_and_errors_leave_the_model_usable(cn_model: kiln.Model) -> None:
    painted = painted_height_map()
    plain = cn_model.generate("mossy stone brick wall", steps=4, seed=7).to_numpy()
    with kiln.Image.from_array(painted) as height, height.canny() as edges:
        guided = cn_model.generate("mossy stone brick wall", steps=4, seed=7,
                                   controls=[kiln.Control("tiny", edges, scale=0.8)]).to_numpy()
    # The array is converted for the call; Kiln runs the same Canny on it.
    by_name = cn_model.generate("mossy stone brick wall", steps=4, seed=7,
                                controls=[kiln.Control("tiny", painted, preprocess="canny", scale=0.8)]).to_numpy()
    differing = int((plain != guided).sum())
    print(f"controlnet: {differing} of {plain.size} bytes differ from the uncontrolled image (need > 0)")
    assert differing > 0
    assert np.array_equal(guided, by_name)

    with cn_model.submit("mossy stone brick wall", steps=4, seed=7,
                         controls=[kiln.Control("tiny", painted, preprocess=kiln.ControlPreprocess.CANNY, scale=0.8)]) as job:
        job.wait(300)
        assert np.array_equal(job.result(), guided)

    with pytest.raises(kiln.ModelNotFoundError) as missing:
        cn_model.generate("x", steps=2, controls=[kiln.Control("no-such-controlnet", painted)])
    assert "tiny" in str(missing.value), "the message lists the model's ControlNets"
    with pytest.raises(TypeError):
        cn_model.generate("x", steps=2, controls=[("tiny", painted)])  # type: ignore[list-item]
    again = cn_model.generate("mossy stone brick wall", steps=4, seed=7,
                              controls=[kiln.Control("tiny", painted, preprocess="canny", scale=0.8)]).to_numpy()
    assert np.array_equal(again, guided)
