"""Bad-input rows for whole runs (issue 21, part B): video, train, prepare and evaluate.

Each row reproduces a finding of the sweep and checks the behaviour a user expects instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from magicface_core.errors import OutputPathError
from magicface_core.files import exclusive_output
from magicface_core.video.io import VideoFile, write_video

ROOT = Path(__file__).resolve().parents[1]


def _frames(count: int, seed: int, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_video_temporary_names_are_unique_per_run(tmp_path, monkeypatch):
    """Finding 2: two runs with one --out shared `.x.partial.mp4`; the second's file held the first's frames."""
    import av

    target = tmp_path / "x.mp4"
    opened = []
    real_open = av.open

    def spy(name, *args, **kwargs):
        if args and args[0] == "w" or kwargs.get("mode") == "w":
            opened.append(Path(name).name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    write_video(target, _frames(3, 0), 25)
    write_video(target, _frames(3, 1), 25)
    assert len(opened) == 2 and opened[0] != opened[1]
    assert all(name.startswith(".x.mp4.") and name.endswith(".partial.mp4") for name in opened)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]  # no temporary file or lock left


def test_video_second_run_on_the_same_out_is_refused_and_the_first_is_whole(tmp_path):
    """Finding 2: while one run writes --out, a second run fails cleanly; the first run's file stays whole."""
    target = tmp_path / "x.mp4"
    with exclusive_output(target):
        with pytest.raises(OutputPathError, match="another run is writing"):
            write_video(target, _frames(3, 1), 25)
        assert not target.exists()
    assert write_video(target, _frames(4, 2), 25) == 4
    assert len(list(VideoFile(target))) == 4


def test_video_sigterm_leaves_no_partial_output(tmp_path):
    """Finding 2 (signals): SIGTERM left `.x.partial.mp4` behind; now it unwinds like Ctrl-C (exit 130)."""
    target = tmp_path / "x.mp4"
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        import numpy as np
        from magicface_core import cli
        from magicface_core.video.io import write_video

        def frames():
            for i in range(10**6):
                if i == 2:
                    print("writing", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                yield np.zeros((16, 16, 3), np.uint8)

        class Parser:  # cli.main's parser, reduced to the one command under test
            def parse_args(self, argv):
                return type("Args", (), {{"command": "video"}})()

        cli.build_parser = Parser
        cli.COMMANDS["video"] = lambda args: write_video({str(target)!r}, frames(), 25)
        sys.exit(cli.main(["video"]))  # through main, so the handler main installs is the one under test
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []
