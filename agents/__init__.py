"""Agents: RQ workers that each keep one Chromium with the Semantest extension alive.

`worker.py` is the life of an agent, `runtime.py` the browser-side engine that executes jobs,
`browser.py` the Chromium launch and extension set-up, `capture.py` how images are fetched and
stored, `jobs.py` the function RQ calls. Imports `semantest`, `extension_bridge` and
`browser_profiles`; never `controller`.
"""
