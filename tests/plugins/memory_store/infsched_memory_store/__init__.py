"""A job store in this process's memory: the second store the job store contract runs on."""
