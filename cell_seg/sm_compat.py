"""The one place that imports segmentation_models, on the Keras 3 (``tf.keras``) stack.

segmentation-models 1.0.1 picks its Keras flavour from the ``SM_FRAMEWORK`` environment
variable *at import time*; its default (``keras``) looks for ``keras.utils.generic_utils``,
which Keras 3 no longer has. Importing it through :func:`import_segmentation_models`
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

from cell_seg.errors import ModelError

#: The framework name segmentation_models must use on Keras 3.
SM_FRAMEWORK = "tf.keras"

#: The command that installs the tested versions of segmentation_models and its encoders.
PIP_INSTALL = "pip install segmentation-models==1.0.1 efficientnet==1.0.0 image-classifiers==1.0.0"


def import_segmentation_models():
    """Import segmentation_models configured for ``tf.keras`` and return the module.

    Returns:
        The ``segmentation_models`` module, with its framework set to ``tf.keras``.

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
    os.environ["SM_FRAMEWORK"] = SM_FRAMEWORK
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import segmentation_models as sm

            if sm.framework() != SM_FRAMEWORK:
                # Imported earlier by someone else with another framework.
                sm.set_framework(SM_FRAMEWORK)
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
