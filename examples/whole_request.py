"""Resolve every media part of one OpenAI Chat Completions request, then a refused one."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np

import mediagate
from mediagate import MediaConnector, MediaError, RequestLimits, openai_error_body

SAMPLES = Path(mediagate.__file__).parent / "_samples"


def b64(name: str) -> str:
    return base64.b64encode((SAMPLES / name).read_bytes()).decode()


request = {
    "model": "any-vlm",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these:"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + b64("square.png")},
                },
                {"type": "input_audio", "input_audio": {"data": b64("tone.wav"), "format": "wav"}},
                {"type": "image_url", "image_url": "data:image/jpeg;base64," + b64("gradient.jpg")},
            ],
        }
    ],
}


async def main() -> None:
    limits = RequestLimits(max_items=8, max_items_per_modality={"video": 1}, timeout=30)
    async with MediaConnector() as connector:
        resolved = await mediagate.resolve_chat_request_async(
            request, connector, limits=limits, placeholders={"image": "<image>", "audio": "<audio>"}
        )
        for item in resolved.items:
            media = item.media[0] if item.modality == "audio" else item.media
            shape = np.asarray(media).shape
            print(f"{item.location:40} {item.modality:6} {shape} {item.content_hash[:12]}")
        print(json.dumps(resolved.texts[0]))

        request["messages"][0]["content"].append(
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}
        )
        try:
            await mediagate.resolve_chat_request_async(request, connector, limits=limits)
        except MediaError as exc:
            print(exc.http_status, json.dumps(openai_error_body(exc), indent=1))


asyncio.run(main())
