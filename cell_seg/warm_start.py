"""Start a training from the weights of an earlier model (`model.init_weights`).

    python -m cell_seg.train --config configs/sartorius_unet_lite0_distance.yaml \\
        model.init_weights=weights/sartorius_unet_lite0_distance train.learning_rate=3e-4

The source is a run directory (its `model.keras`), a `.keras` file, or a SavedModel written by
`python -m cell_seg.export` (a released model under `weights/`; float16 exports come back as
float32). It must be the same network: every weight is copied in order and its shape checked.
The channel names of the source's `metadata.json` must equal the ones this config trains, or be
among them: a config may add target channels (e.g. "centre" beside a released model's
"distance"); the output layer then keeps its fresh weights for the new channels only. The
optimiser, the learning-rate schedule and the epoch count start afresh; use `--resume` to
continue an interrupted run instead.

This is how a model keeps learning beyond one machine's life: the run directory is gone, the
release is not. Reading a SavedModel needs TensorFlow (a `.keras` source works on any backend).
"""

from pathlib import Path

import numpy as np

from cell_seg.errors import ConfigError, ModelError
from cell_seg.metadata import ModelMetadata

KEY = "model.init_weights"


def _keras_source(keras_file):
    from cell_seg.models import load_model

    model = load_model(keras_file, compile=False)
    return ([np.asarray(v.numpy()) for v in model.trainable_variables],
            [np.asarray(v.numpy()) for v in model.non_trainable_variables])


def _saved_model_source(export_dir):
    try:
        import tensorflow as tf
    except ImportError:
        raise ModelError(f"{KEY}: {export_dir} is a SavedModel, which needs TensorFlow to read; "
                         "give the run directory or its .keras file instead") from None
    float16 = ModelMetadata.of_model(export_dir).weights_dtype == "float16"
    try:
        reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    except Exception as error:  # a missing or damaged variables folder
        raise ModelError(f"{KEY}: {export_dir}: cannot read the SavedModel's variables ({error})") from None
    names = reader.get_variable_to_shape_map()

    def stored(group):
        values, index = [], 0
        while f"{group}/{index}/.ATTRIBUTES/VARIABLE_VALUE" in names:
            values.append(reader.get_tensor(f"{group}/{index}/.ATTRIBUTES/VARIABLE_VALUE"))
            index += 1
        if not values and group == "trainable":
            raise ModelError(f"{KEY}: {export_dir} holds no weights in cell_seg.export's layout; "
                             "export it with python -m cell_seg.export")
        # float16 exports keep their values as int16 bits (see cell_seg.export.stored_variables).
        return [v.view(np.float16).astype(np.float32) if float16 and v.dtype == np.int16 else v for v in values]

    return stored("trainable"), stored("non_trainable")


def read_initial_weights(path):
    """((trainable, non_trainable) lists of arrays, channel names) of a run, `.keras` file or export.

    The channel names come from the model's metadata (`ModelMetadata.of_model`, which finds it for
    each kind of source)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config key '{KEY}': {path} does not exist")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        values = _saved_model_source(path)
    elif path.is_dir():
        if not (path / "model.keras").is_file():
            raise ConfigError(f"config key '{KEY}': {path} is neither a run directory (no model.keras) "
                              "nor an exported SavedModel (no saved_model.pb)")
        values = _keras_source(path / "model.keras")
    elif path.suffix == ".keras":
        values = _keras_source(path)
    else:
        raise ConfigError(f"config key '{KEY}': {path}: expected a run directory, a .keras file or an exported SavedModel")
    return values, ModelMetadata.of_model(path).channels


def initialise_weights(model, path, channels):
    """Copy the weights of `path` into `model` (built by this config); errors name the key and the mismatch.

    When this config trains every channel of the source and more (a new target added to a trained
    model), the output layer's weights of the shared channels are copied by name and the new
    channels keep their fresh initialisation; returns the names of the new channels.
    """
    (trainable, non_trainable), source_channels = read_initial_weights(path)
    source_channels, channels = list(source_channels), list(channels)
    added = [name for name in channels if name not in source_channels]
    if source_channels != channels and (added == [] or any(name not in channels for name in source_channels)):
        raise ConfigError(f"config key '{KEY}': {path} predicts channels {source_channels}, "
                          f"this config trains {channels}")
    # Output-layer columns: position in this model -> position in the source.
    shared = [(channels.index(name), source_channels.index(name)) for name in source_channels]
    for group, targets, values in (("trainable", model.trainable_variables, trainable),
                                   ("non-trainable", model.non_trainable_variables, non_trainable)):
        if len(targets) != len(values):
            raise ConfigError(f"config key '{KEY}': {path} has {len(values)} {group} weights, this model "
                              f"{len(targets)}: not the same network (check model.name, model.backbone, model.decoder_filters)")
        for variable, value in zip(targets, values):
            shape = tuple(variable.shape)
            if shape != tuple(value.shape):
                if not (added and shape[:-1] == value.shape[:-1] and shape[-1] == len(channels)
                        and value.shape[-1] == len(source_channels)):
                    raise ConfigError(f"config key '{KEY}': weight {variable.path} is {shape} here and "
                                      f"{tuple(value.shape)} in {path}: not the same network")
                merged = np.array(variable.numpy())
                for here, there in shared:
                    merged[..., here] = value[..., there]
                value = merged
            variable.assign(value.astype(variable.dtype))
    return added
