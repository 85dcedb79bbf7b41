"""Environments: tasks, episodes (turns and feedback) and program execution."""
