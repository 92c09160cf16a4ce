"""Built-in exporters."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.exporters.onnx_export import OnnxExporter


@hookimpl
def register_exporters(register):
    register(OnnxExporter)
