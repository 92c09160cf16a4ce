"""Built-in encoders: the bundled MiniLM sentence transformer, and static embeddings (model2vec) distilled from it."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.encoders.minilm import SentenceTransformerEncoder
from kdstudio_plugins.encoders.static import StaticEncoder


@hookimpl
def register_encoders(register):
    register(SentenceTransformerEncoder)
    register(StaticEncoder)
