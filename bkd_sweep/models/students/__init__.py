"""Spiking students, one module per family; importing this package registers them all."""

from bkd_sweep.models.students import (  # noqa: F401  (imported to register)
    cnn_small, sew_resnet, spikformer, spiking_resnet)
from bkd_sweep.models.students._common import to_time_major
from bkd_sweep.models.students._registry import (STUDENTS, create_student, list_students,
                                                 register_student)

__all__ = ["STUDENTS", "create_student", "list_students", "register_student", "to_time_major"]
