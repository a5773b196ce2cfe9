"""Model registries: spiking students (spikingjelly 2.0, multi-step) and frozen teachers.

``create_student(arch, num_classes=..., timesteps=..., neuron=NeuronConfig(...))`` and
``create_teacher(TeacherConfig(...), num_classes=..., in_channels=..., image_size=...)``;
unknown names list the valid ones. Call ``reset(model)`` after every student forward.
"""

from bkd_sweep.models.base import SpikingStudent, Teacher, TeacherOutput, training_layout
from bkd_sweep.models.neurons import neuron_factory, reset
from bkd_sweep.models.students import create_student, list_students, register_student
from bkd_sweep.models.teachers import (CheckpointError, build_teacher_network, create_teacher,
                                       list_teachers, load_weights, register_teacher,
                                       wrap_teacher)

__all__ = [
    "CheckpointError", "SpikingStudent", "Teacher", "TeacherOutput", "build_teacher_network",
    "create_student", "create_teacher", "list_students", "list_teachers", "load_weights",
    "neuron_factory", "register_student", "register_teacher", "reset", "training_layout",
    "wrap_teacher",
]
