"""DOM replicas of real chat image providers (ChatGPT, Gemini), so their addons run offline.

Each replica serves its provider's real host names (`chatgpt.com` and `files.oaiusercontent.com`;
`gemini.google.com` and `lh3.google.com`) over HTTPS with a test certificate, behind
a small forwarding proxy that sends only those names to the replica and refuses everything else
(`net.py`). A browser pointed at the proxy (`SEMANTEST_BROWSER_PROXY`, with
`SEMANTEST_BROWSER_IGNORE_HTTPS_ERRORS=true` for the test certificate) loads `https://chatgpt.com/`
from the replica, so the addons' real match patterns and start URLs are used unchanged, and the
agent's image download (Playwright's request client, which follows the same proxy) gets the
same answers.

What the replicas reproduce: the composer (a ProseMirror / Quill contenteditable), send and
stop buttons, the streamed assistant turn, images served from another origin (Gemini's need the
signed-in profile's `.google.com` cookie, set by the sign-in redirect of the first visit;
ChatGPT's are URLs signed for the session, dead once it is logged out), and the
logged-out, rate-limit and refusal screens, switched by faults
(`POST /_replica/<name>/faults {"kind": "ratelimit" | "refusal" | "logout" | "slow", "count",
"retryAfter"}`; `DELETE` clears them and signs the profile back in).
Imports nothing of Semantest but the sandbox's renderer (images are its deterministic PNGs).
"""
