"""The controller: the FastAPI app that takes jobs, serves results and serves addons.

`app.py` only assembles; each resource has its router in `routes/`. Imports `semantest`,
`addons` and `extension_bridge.protocol` — never `agents` or Playwright: jobs are enqueued into
RQ by dotted path (`semantest.keys.GENERATE_FUNC`).
"""
