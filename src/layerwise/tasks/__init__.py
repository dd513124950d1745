"""Tasks: prompts, SFT targets, a verifiable reward and an accuracy check (one `score` for both)."""

from layerwise.tasks.base import Episode, Task, TaskItem, is_correct, reward_function, sft_examples
from layerwise.tasks.registry import BUILTIN_TASKS, get_task, parse_task_options, task_names

__all__ = ["Episode", "Task", "TaskItem", "is_correct", "reward_function", "sft_examples",
           "BUILTIN_TASKS", "get_task", "parse_task_options", "task_names"]
