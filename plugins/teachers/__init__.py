"""Built-in teachers."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.teachers.committee import CascadeTeacher, CommitteeTeacher
from kdstudio_plugins.teachers.llm import LLMTeacher
from kdstudio_plugins.teachers.oracle import OracleTeacher
from kdstudio_plugins.teachers.zeroshot import ZeroShotTeacher


@hookimpl
def register_teachers(register):
    register(ZeroShotTeacher)
    register(LLMTeacher)
    register(OracleTeacher)
    register(CommitteeTeacher)
    register(CascadeTeacher)
