"""The background job queue's task definitions and worker (procrastinate); each task calls a service method."""
