"""The one place that imports segmentation_models, on any Keras 3 backend.

segmentation-models 1.0.1 picks its Keras flavour from the ``SM_FRAMEWORK`` environment
variable *at import time*. On the TensorFlow backend it uses ``tf.keras`` (whose backend
module still has the Keras-2 helpers it calls). On JAX or PyTorch TensorFlow may be absent,
so it uses ``keras``, which needs a few Keras-2 names that Keras 3 dropped:
``keras.utils.generic_utils.get_custom_objects`` (called at import) and, in
``keras.backend``, ``sigmoid`` (EfficientNet's swish), ``int_shape`` (FPN, Linknet) and
``shape`` (EfficientNet's FixedDropout). :func:`patch_keras2_names` adds them, pointing at
their Keras 3 equivalents, and never replaces an existing name. The layers built are the
same classes either way, so a model trained on JAX loads on TensorFlow (and back).

Importing it through :func:`import_segmentation_models`
sets the variable first, silences the banner it prints on stdout (CLIs write results
there) and turns a missing install into a :class:`~cell_seg.errors.ModelError` whose
message names the pip command that fixes it.

Importing segmentation_models also registers the custom objects of its EfficientNet
encoders (``swish``, ``FixedDropout``) with Keras, which ``.keras`` files of such models
need before they can be loaded (see :func:`cell_seg.models.load_model`).
"""

import contextlib
import io
import os
import sys
import types

from cell_seg.errors import ModelError

#: The framework name segmentation_models uses on Keras 3's TensorFlow backend.
SM_FRAMEWORK = "tf.keras"

#: The framework name it uses on the other backends (jax, torch), with :func:`patch_keras2_names`.
SM_FRAMEWORK_MULTI_BACKEND = "keras"

#: The command that installs the tested versions of segmentation_models and its encoders.
PIP_INSTALL = "pip install segmentation-models==1.0.1 efficientnet==1.0.0 image-classifiers==1.0.0"


def keras_backend_name():
    """The Keras backend in use ("tensorflow", "jax", "torch"), read without importing TensorFlow."""
    import keras

    return keras.backend.backend()


def sm_framework():
    """The segmentation_models framework name for the current Keras backend."""
    return SM_FRAMEWORK if keras_backend_name() == "tensorflow" else SM_FRAMEWORK_MULTI_BACKEND


def _int_shape(x):
    """Keras 2's ``backend.int_shape``: the static shape as a tuple of ints and None."""
    return tuple(None if dim is None else int(dim) for dim in x.shape)


def patch_keras2_names():
    """Give Keras 3 the Keras-2 names segmentation_models and efficientnet call (only where missing).

    Idempotent; existing attributes are never replaced.

    Example:
        >>> import keras
        >>> patch_keras2_names()
        >>> keras.backend.int_shape(keras.Input((None, 4, 3)))
        (None, None, 4, 3)
    """
    import keras

    utils = keras.utils
    if not hasattr(utils, "generic_utils"):
        generic_utils = types.ModuleType("keras.utils.generic_utils")
        generic_utils.get_custom_objects = keras.saving.get_custom_objects
        utils.generic_utils = generic_utils
        sys.modules.setdefault("keras.utils.generic_utils", generic_utils)
    names = {
        "sigmoid": keras.ops.sigmoid,
        "int_shape": _int_shape,
        "shape": keras.ops.shape,
        "name_scope": keras.name_scope,
    }
    for name, function in names.items():
        if not hasattr(keras.backend, name):
            setattr(keras.backend, name, function)


def import_segmentation_models():
    """Import segmentation_models configured for the current Keras backend and return the module.

    Returns:
        The ``segmentation_models`` module, with its framework set to ``tf.keras`` on the
        TensorFlow backend and to ``keras`` (with :func:`patch_keras2_names`) on the others.

    Raises:
        ModelError: segmentation_models (or one of its dependencies) is not installed or
            cannot be imported; the message names the pip command that fixes it.

    Example:
        >>> sm = import_segmentation_models()
        >>> sm.framework()
        'tf.keras'
        >>> "efficientnetb0" in sm.get_available_backbone_names()
        True
    """
    framework = sm_framework()
    if framework == SM_FRAMEWORK_MULTI_BACKEND:
        patch_keras2_names()
    os.environ["SM_FRAMEWORK"] = framework
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import segmentation_models as sm

            if sm.framework() != framework:
                # Imported earlier by someone else with another framework.
                sm.set_framework(framework)
    except ImportError as exc:
        raise ModelError(
            f"segmentation_models cannot be imported ({exc}); install it with: {PIP_INSTALL}"
        ) from exc
    except AttributeError as exc:
        # e.g. "module 'keras.utils' has no attribute 'generic_utils'": a Keras-2-only setup.
        raise ModelError(
            f"segmentation_models cannot be used with this Keras ({exc}); "
            f"reinstall it with: {PIP_INSTALL}"
        ) from exc
    return sm
