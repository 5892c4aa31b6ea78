"""Local stand-ins for image APIs (OpenAI Images, Stability's Stable Image), for tests and demos.

They follow the documented request and response shapes and errors closely enough that the API
worker (`agents/api_worker.py`) runs against them exactly as against the real services; only
the base URL differs (`SEMANTEST_OPENAI_BASE_URL`, `SEMANTEST_STABILITY_BASE_URL`). Images are
the sandbox's deterministic PNGs, so tests compare sha256 of real bytes.
"""
