"""``import gradflow.nn.functional as F``: the same functions as ``gradflow.functional``."""
from gradflow.functional import *  # noqa: F401,F403
from gradflow.functional import __all__  # noqa: F401
