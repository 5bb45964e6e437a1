"""The command line on the seed's own Keras weights: predict on first_try.h5 directly,
convert it to a fastconv model file, and predict with that (issue 8)."""
import json
import os

import numpy as np
import pytest

from fastconv.cli import main

pytest.importorskip("h5py")
data = pytest.importorskip("fastconv.data")

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "seed")
H5 = os.path.join(SEED, "first_try.h5")
EXPECTED = os.path.join(SEED, "expected.npz")
pytestmark = pytest.mark.skipif(not os.path.isfile(H5), reason=f"{H5} is not here")


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory):
    """expected.npz's six 150x150 inputs written as PNG files (so rounded to uint8),
    with the reference model's outputs on the rounded inputs."""
    from PIL import Image

    from fastconv.models import small_convnet
    e = np.load(EXPECTED)
    folder = tmp_path_factory.mktemp("seed_images")
    pixels = np.round(e["x"] * 255).astype(np.uint8)
    paths = []
    for name, img in zip(e["names"], pixels):
        path = folder / f"{name}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    model = small_convnet(device="reference", weights=H5)
    p_rounded = model.predict(pixels.astype(np.float32) / np.float32(255))[:, 0]
    return folder, paths, p_rounded, e["p_keras"][:, 0]


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_predict_on_keras_h5_matches_keras_and_says_what_it_assumed(seed_images, capsys):
    folder, paths, p_rounded, p_keras = seed_images
    assert main(["predict", H5, *paths, "--device", "reference"]) == 0
    out = capsys.readouterr().out
    assert "assumed the seed small convnet architecture" in out
    assert "0 = cats, 1 = dogs" in out
    assert main(["predict", H5, str(folder), "--device", "reference", "--json"]) == 0
    report = _json(capsys)
    assert report["assumed_architecture"] == "seed small convnet"
    assert report["class_names"] == ["cats", "dogs"]
    assert "1/255" in report["preprocessing"]
    by_path = {p["path"]: p for p in report["predictions"]}
    assert sorted(by_path) == sorted(paths)          # the folder was searched
    for path, pr, pk in zip(paths, p_rounded, p_keras):
        got = by_path[path]
        p_dogs = got["probabilities"]["dogs"]
        # same preprocessing as the arrays: exactly the model's output
        np.testing.assert_allclose(p_dogs, pr, rtol=0, atol=1e-5)
        # Keras's own output on the unrounded inputs; PNG's uint8 rounding moves it <3e-4
        np.testing.assert_allclose(p_dogs, pk, rtol=0, atol=1e-3)
        assert got["class"] == ("dogs" if pr >= 0.5 else "cats")
        assert got["probability"] == pytest.approx(max(pr, 1 - pr), abs=1e-5)


def test_class_names_override_and_wrong_count(seed_images, capsys):
    _, paths, p_rounded, _ = seed_images
    assert main(["predict", H5, paths[0], "--device", "reference", "--json",
                 "--class-names", "kitten,puppy"]) == 0
    report = _json(capsys)
    assert report["class_names"] == ["kitten", "puppy"]
    assert report["predictions"][0]["class"] == ("puppy" if p_rounded[0] >= 0.5 else "kitten")
    assert main(["predict", H5, paths[0], "--device", "reference",
                 "--class-names", "a,b,c"]) == 1
    err = capsys.readouterr().err
    assert "3 class names" in err and "1 output unit" in err


def test_convert_then_predict_gives_the_same_probabilities(seed_images, tmp_path, capsys):
    _, paths, p_rounded, _ = seed_images
    out = tmp_path / "model.fcm"
    assert main(["convert", H5, str(out)]) == 0
    text = capsys.readouterr().out
    assert "assumed the seed small convnet architecture" in text and str(out) in text
    assert main(["predict", str(out), *paths, "--device", "reference", "--json"]) == 0
    report = _json(capsys)
    assert report["model_type"] == "fastconv" and "assumed_architecture" not in report
    assert report["class_names"] == ["cats", "dogs"]       # stored in the file
    got = [p["probabilities"]["dogs"] for p in report["predictions"]]
    np.testing.assert_allclose(got, p_rounded, rtol=0, atol=1e-6)
    assert main(["summary", str(out)]) == 0
    assert "Total params: 438,369" in capsys.readouterr().out


def test_convert_rejects_what_is_not_a_seed_keras_file(tmp_path, capsys):
    import h5py
    other = tmp_path / "other.h5"         # a Keras 2 weights file of another architecture
    with h5py.File(other, "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
        g = f.create_group("dense_1")
        g.attrs["weight_names"] = [b"dense_1/kernel:0", b"dense_1/bias:0"]
        g.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))
        g.create_dataset("dense_1/bias:0", data=np.zeros((2,), np.float32))
    assert main(["convert", str(other), str(tmp_path / "m.fcm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastconv convert: error: ") and "another architecture" in err
    assert len(err.strip().splitlines()) == 1
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    assert main(["convert", str(text), str(tmp_path / "m.fcm")]) == 1
    assert "not an HDF5 file" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.h5"), str(tmp_path / "m.fcm")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["convert", H5, str(tmp_path / "no" / "such" / "m.fcm")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m.fcm").exists()


def test_predict_on_the_default_cpu_device_matches_too(seed_images, capsys):
    from fastconv import kernels
    try:
        kernels.get("cpu")
    except kernels.BackendUnavailable as exc:
        pytest.skip(str(exc))
    _, paths, p_rounded, _ = seed_images
    assert main(["predict", H5, *paths, "--json"]) == 0          # --device cpu by default
    got = [p["probabilities"]["dogs"] for p in _json(capsys)["predictions"]]
    np.testing.assert_allclose(got, p_rounded, rtol=0, atol=1e-5)
