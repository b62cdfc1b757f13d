"""The README's path: `assistant serve` on an empty data directory, then a streamed answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.conftest import MODEL, _free_port


def test_first_start_migrates_creates_a_key_and_streams(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(tmp_path / "data"), "ASSISTANT_SERVER__PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the server exited"
            time.sleep(0.25)
        key_file = tmp_path / "data" / "admin-key.txt"
        key = key_file.read_text().strip()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        assert [m.id for m in client.models.list()] == [MODEL]
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert str(key_file) in output  # the log says where the key is...
    assert key not in output  # ...and never shows the key itself
    assert "starting the embedded fine-tuning worker" in output and " ready." in output, output[-3000:]
