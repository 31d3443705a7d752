"""Student models: the DistilBERT-architecture classifier and how to build it from a teacher."""

from distilprune.students.distilbert import CHECKPOINT_INFO, DistilBertStudent, StudentConfig
from distilprune.students.from_teacher import student_from_teacher

__all__ = ["CHECKPOINT_INFO", "DistilBertStudent", "StudentConfig", "student_from_teacher"]
