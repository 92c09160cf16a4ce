"""Built-in engines: Ray (an optional extra, imported only when a job runs on it)."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.engines.ray_engine import RayEngine


@hookimpl
def register_engines(register):
    register(RayEngine)
