"""Browser profiles: templates, per-agent profile dirs, locking and the login desk.

For now an agent's profile is simply `<data_dir>/profiles/<agent id>` (see `agents.runtime`);
templates, locks and the login desk arrive with real providers. Imports only `semantest`.
"""
