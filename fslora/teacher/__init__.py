"""Training-time teacher: a COCO person detector read from its TFJS graph into torch (never in the app)."""

from fslora.teacher.person_teacher import PersonTeacher, default_package_dir
from fslora.teacher.tfjs_graph import TeacherError, TFJSGraph

__all__ = ["PersonTeacher", "TFJSGraph", "TeacherError", "default_package_dir"]
