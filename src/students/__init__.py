"""Student models: the DistilBERT-architecture classifier and how to build it from a teacher."""

from distilprune.students.distilbert import DistilBertStudent, StudentConfig
from distilprune.students.from_teacher import student_from_teacher

__all__ = ["DistilBertStudent", "StudentConfig", "student_from_teacher"]
