"""Built-in label doubts: cleanlab's label-issue ranking, and the teacher's own confidence."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.doubts.cleanlab_doubt import CleanlabDoubt, ConfidenceDoubt


@hookimpl
def register_doubts(register):
    register(CleanlabDoubt)
    register(ConfidenceDoubt)
