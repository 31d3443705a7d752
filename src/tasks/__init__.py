"""Tasks: one module per task behind the interface of :mod:`distilprune.tasks.base`.

``recipe.task`` names the task; :func:`task_for` builds it. See docs/tasks.md for what a task
provides and who calls it.
"""

from __future__ import annotations

from distilprune.tasks.base import IGNORE, Scored, Task, TaskData, model_inputs
from distilprune.tasks.question_answering import QuestionAnswering
from distilprune.tasks.sequence_classification import SequenceClassification
from distilprune.tasks.token_classification import TokenClassification

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (SequenceClassification, TokenClassification, QuestionAnswering)
}


def task_for(recipe) -> Task:
    """The task ``recipe.task`` names, reading ``recipe.data`` (and, for question answering, the
    answer limits of ``recipe.export``)."""
    if recipe.task == QuestionAnswering.name:
        return QuestionAnswering(recipe.data, recipe.export.qa_n_best, recipe.export.qa_max_answer_tokens)
    return TASKS[recipe.task](recipe.data)


def default_task() -> Task:
    """Sequence classification without a data source: for callers that bring their own splits."""
    return SequenceClassification(None)


__all__ = ["IGNORE", "TASKS", "Scored", "Task", "TaskData", "default_task", "model_inputs", "task_for"]
