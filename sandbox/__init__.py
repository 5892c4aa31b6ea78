"""Sandbox: a local image-chat provider (the embedded default); imports nothing of ours.

It behaves like a real chat-based image generator (a contenteditable composer, a streamed
NDJSON reply, a nonce-only script CSP, a session cookie) so demos, tests and benchmarks can
run offline against something provider-shaped.
"""
