"""One router module per resource; `controller.app` mounts them under /api/v1."""
