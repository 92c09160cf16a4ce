"""Built-in students: scikit-learn heads on sentence embeddings, a fine-tuned MiniLM, and the free labellers that
let the unlabelled pool teach them (self-training, label spreading)."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.students.finetune import FineTunedStudent
from kdstudio_plugins.students.free_labels import LabelSpreading, SelfTraining
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


@hookimpl
def register_free_labels(register):
    register(SelfTraining)
    register(LabelSpreading)
