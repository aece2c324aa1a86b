"""The part of vLLM's ``tests/conftest.py`` that its media tests use.

vLLM's own ``tests/conftest.py`` imports the engine, the distributed runtime and model
test utilities. The suite puts this file at ``tests/conftest.py`` instead: these imports,
followed by the definitions the media tests need, copied verbatim from vLLM's file by
``setup_suite.py`` (``CONFTEST_PIECES``): the asset lists (``AudioTestAssets``, imported
by ``test_audio.py``), their fixtures, the loopback image server (``local_asset_server``,
``image_url``) and the HTTP client reset each test gets. The assets themselves come from the
suite's stand-ins (``integration/vllm/harness/media.py``) through vLLM's asset code.
"""

# ruff: noqa: F401

import http.server
import mimetypes
import socket
import threading
from collections.abc import Generator
from typing import TypedDict

import pytest
from PIL import Image
from vllm.assets.audio import AudioAsset
from vllm.assets.image import ImageAsset
from vllm.assets.video import VideoAsset
from vllm.connections import global_http_connection
from vllm.logger import init_logger
from vllm.multimodal.media import MediaWithBytes
from vllm.multimodal.utils import fetch_image

# --- copied from vLLM's tests/conftest.py below this line ---
