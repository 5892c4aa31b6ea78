"""Options do what they say, through the real agent, extension, addon and sandbox page: `size`
is the size of the stored images, `count` the number of images, `style` and `model` another
picture; a later job on the same tab without options gets the defaults again. Each stored image
is compared by sha256 with what the sandbox renders for that request."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from sandbox.render import ImageSpec, render, render_png
from semantest.models import HONOURED_BY, JobOptions, Provider
from tests.e2e.conftest import wait_final

pytestmark = pytest.mark.e2e


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(api: httpx.Client, prompt: str, options: dict[str, object]) -> list[dict[str, object]]:
    reply = api.post("/api/v1/images/generate", json={"prompt": prompt, "options": options})
    assert reply.status_code == 202, reply.text
    record = wait_final(api, reply.json()["jobId"])
    assert record["status"] == "succeeded", record.get("error")
    images: list[dict[str, object]] = record["images"]
    return images


def test_count_and_size_are_rendered_and_stored(api: httpx.Client) -> None:
    prompt = "two small lighthouses"
    images = run(api, prompt, {"count": 2, "size": "256x128"})
    expected = [sha(render(ImageSpec(prompt, 256, 128, n))) for n in range(2)]
    assert [i["sha256"] for i in images] == expected
    assert len(set(expected)) == 2
    assert all((i["width"], i["height"]) == (256, 128) for i in images)
    for image in images:  # the bytes served are the bytes rendered
        assert sha(api.get(str(image["url"])).content) == image["sha256"]

    # the same tab, no options: one default image again, not the last job's settings
    plain = run(api, prompt, {})
    assert [i["sha256"] for i in plain] == [sha(render_png(prompt))]
    assert (plain[0]["width"], plain[0]["height"]) == (512, 512)


def test_style_and_model_give_another_picture(api: httpx.Client) -> None:
    prompt = "a kite over dunes"
    images = run(api, prompt, {"style": "ink", "model": "sandbox-2"})
    assert [i["sha256"] for i in images] == [
        sha(render(ImageSpec(prompt, style="ink", model="sandbox-2")))
    ]
    assert images[0]["sha256"] != sha(render_png(prompt))


def test_every_provider_is_listed_for_every_option() -> None:
    # The sandbox honours every option; other providers are listed where they honour one, and
    # the API refuses an option for a provider not listed (tests/e2e/test_api_providers.py).
    assert set(HONOURED_BY) == set(JobOptions.model_fields) - {"cache"}
    for option, providers in HONOURED_BY.items():
        assert {p.value for p in Provider} <= set(providers), option  # the sandbox honours all
        description = JobOptions.model_fields[option].description or ""
        assert "Honoured by: " + ", ".join(providers) in description, option
