"""Built-in review backends."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.review.labelstudio import LabelStudioBackend


@hookimpl
def register_review_backends(register):
    register(LabelStudioBackend)
