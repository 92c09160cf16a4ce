"""Built-in students: scikit-learn heads on sentence embeddings, and a fine-tuned MiniLM."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.students.finetune import FineTunedStudent
from kdstudio_plugins.students.heads import (
    GradientBoostingStudent,
    LDAStudent,
    LinearSVMStudent,
    LogisticRegressionStudent,
    RandomForestStudent,
)


@hookimpl
def register_students(register):
    for student in (LogisticRegressionStudent, LinearSVMStudent, LDAStudent, RandomForestStudent,
                    GradientBoostingStudent, FineTunedStudent):
        register(student)
