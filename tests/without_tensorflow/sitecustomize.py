"""On PYTHONPATH, this makes every Python process (BentoML's workers included) behave as if
TensorFlow were not installed: `import tensorflow` raises ImportError, as it does on a machine
without it. tests/test_jax_backend.py runs the JAX backend under it."""

import importlib.abc
import sys

BLOCKED = ("tensorflow", "tf_keras", "tensorboard")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
