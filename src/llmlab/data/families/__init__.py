"""The task families of the built-in task world, one small class each."""
