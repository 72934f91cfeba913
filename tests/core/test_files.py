import json
import threading
from pathlib import Path

from core.files import replace_file


def test_a_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    replace_file(path, json.dumps({"n": 0}))
    stop = threading.Event()

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            replace_file(path, json.dumps({"n": n, "padding": "x" * 50_000}))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = [json.loads(path.read_text())["n"] for _ in range(2_000)]
    finally:
        stop.set()
        writer.join()
    assert seen == sorted(seen)
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_bytes_are_written_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.bin"
    replace_file(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
