"""Keras 3 multi-backend: a run trained on JAX with no TensorFlow importable loads, predicts and exports on TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cell_seg.data.synthetic import write_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=unet_plain", "model.filters=4", "model.depth=2",
    "data.crop_size=64", "data.batch_size=2", "data.steps_per_epoch=2", "data.augment=light",
    "train.epochs=2", "train.verbose=0", "eval.tune=false",
]
STUB_MESSAGE = "tensorflow is blocked in this test environment"

# Runs in the JAX subprocess: proves TensorFlow cannot be imported, trains (with evaluation),
# predicts one image with the Predictor and saves the probabilities for the TensorFlow side;
# export must refuse with one clear error (a SavedModel needs TensorFlow).
JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    try:
        import tensorflow
    except ImportError as error:
        print("tensorflow import failed:", error)
    else:
        sys.exit("tensorflow was importable")
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from cell_seg.cli.train import main
    main(json.loads(sys.argv[1]))
    from cell_seg.inference import Predictor
    import cv2
    predictor = Predictor.load(sys.argv[2])
    np.save(sys.argv[3], predictor.predict_probs(cv2.imread(sys.argv[4], cv2.IMREAD_UNCHANGED)))
    from cell_seg.errors import ModelError
    from cell_seg.export import export_model
    try:
        export_model(sys.argv[2], sys.argv[3] + ".export")
    except ModelError as error:
        print("export refused:", error)
    print("modules:", sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow"))
""")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """A tiny unet_plain run trained under KERAS_BACKEND=jax in a subprocess that cannot import TensorFlow."""
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("backends")
    coco = write_synthetic_coco(root / "data", n_images=6, shape=(96, 112), seed=3, cells=(4, 8))
    images = root / "data" / "images"
    stub = root / "no_tensorflow" / "tensorflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ImportError({STUB_MESSAGE!r})\n")
    out = root / "runs" / "jax_tiny"
    image = sorted(images.glob("*.png"))[0]
    probs = root / "jax_probs.npy"
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=os.pathsep.join([str(stub.parent), str(ROOT)]),
               TF_CPP_MIN_LOG_LEVEL="3")
    # Two spawned worker processes build the batches: started after JAX, they must not hang.
    args = ["--out", str(out)] + TINY + ["data.workers=2", "data.use_multiprocessing=true",
                                         f"data.coco={coco}", f"data.images={images}"]
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(args), str(out), str(probs), str(image)],
                            capture_output=True, text=True, env=env, cwd=root, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, image, probs, result.stdout


@pytest.mark.slow
def test_jax_training_runs_without_tensorflow(jax_run):
    out, _, probs, stdout = jax_run
    assert f"tensorflow import failed: {STUB_MESSAGE}" in stdout
    assert "modules: []" in stdout
    assert "export refused: export needs Keras' tensorflow backend, not jax" in stdout
    for name in ("config.yaml", "metadata.json", "history.csv", "model.keras", "metrics.json",
                 "checkpoints/best.keras", "checkpoints/last.keras"):
        assert (out / name).is_file(), name
    assert not (out / "logs").exists()  # TensorBoard logs need TensorFlow
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["summary"]["map"] <= 1.0
    assert np.load(probs).shape == (96, 112, 2)


@pytest.mark.slow
def test_jax_run_predicts_the_same_on_tensorflow_and_exports(jax_run, tmp_path):
    import keras

    from cell_seg.export import export_model
    from cell_seg.inference import Predictor
    import cv2

    assert keras.backend.backend() == "tensorflow"
    out, image, probs, _ = jax_run
    pixels, expected = cv2.imread(str(image), cv2.IMREAD_UNCHANGED), np.load(probs)
    np.testing.assert_allclose(Predictor.load(out).predict_probs(pixels), expected, atol=1e-4)
    exported = export_model(out, tmp_path / "exported")
    assert (exported / "saved_model.pb").is_file()
    np.testing.assert_allclose(Predictor.load(exported).predict_probs(pixels), expected, atol=1e-4)
