"""Built-in teachers."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.teachers.oracle import OracleTeacher


@hookimpl
def register_teachers(register):
    register(OracleTeacher)
