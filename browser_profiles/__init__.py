"""Browser profiles: templates, per-agent profile folders, locking, budgets and the login desk.

A profile holds a provider login and the extension's "Allow User Scripts" toggle. The pieces:

- `extension`: launch flags, extension digest, stale service-worker code, the toggle.
- `templates`: `ensure_template(...)` prepares the template profile once (toggle on).
- `profiles`: `open_profile(...)` / `open_agent_profile(...)` lock a profile (crash-safe flock,
  `ProfileLocked` names the holder) and copy it from the template when new.
- `budget`: `AccountBudget(redis, per_hour)`, jobs per account in a sliding hour.
- `login_desk`: `python -m browser_profiles login-desk PROFILE` to log a profile in by hand.

Imports only `semantest` and `extension_bridge` (import-linter contract). See docs/profiles.md.
"""

from browser_profiles.budget import AccountBudget
from browser_profiles.extension import (
    allow_user_scripts,
    drop_stale_extension_code,
    extension_digest,
    launch_args,
)
from browser_profiles.profiles import (
    Holder,
    OpenProfile,
    ProfileLock,
    ProfileLocked,
    open_agent_profile,
    open_profile,
)
from browser_profiles.templates import TemplateError, ensure_template

__all__ = [
    "AccountBudget",
    "Holder",
    "OpenProfile",
    "ProfileLock",
    "ProfileLocked",
    "TemplateError",
    "allow_user_scripts",
    "drop_stale_extension_code",
    "ensure_template",
    "extension_digest",
    "launch_args",
    "open_agent_profile",
    "open_profile",
]
