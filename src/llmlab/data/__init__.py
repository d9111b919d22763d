"""The built-in task world and the loaders for the user's own data.

Light on purpose: importing `llmlab.data` loads neither torch nor `datasets`.

    from llmlab.data import sample_tasks, parse_task
    task = sample_tasks(1, seed=0, split="eval")[0]
    task.prompt, task.answer, task.score("The answer is 17."), task.is_refusal("I can't help with that.")
"""

from llmlab.data.answers import is_refusal
from llmlab.data.task import Task
from llmlab.data.tasks import FAMILIES, parse_task, sample_tasks, score
from llmlab.data.world import build_world, split_of

__all__ = ["FAMILIES", "Task", "build_world", "is_refusal", "parse_task", "sample_tasks", "score", "split_of"]
