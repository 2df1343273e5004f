"""Compiled training and evaluation, schedules, checkpoints, metrics and progress."""
