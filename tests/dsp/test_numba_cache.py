"""Compiled kernels are cached in a per-user directory when NUMBA_CACHE_DIR is unset."""

import os
import subprocess
import sys


def test_kernels_cache_under_the_user_cache_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = (
        "from sideman.engine.demo import demo_score\n"
        "from sideman.engine.tokenizer import Tokenizer\n"
        "from sideman.engine.vocab import EncoderConfig\n"
        "print(len(Tokenizer(EncoderConfig.yellow()).encode_score(demo_score(), window_bars=8)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cached = list((tmp_path / "sideman" / "numba").rglob("*.nbi"))
    assert cached, "no numba index files were written under XDG_CACHE_HOME/sideman/numba"


def test_an_explicit_numba_cache_dir_wins(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "explicit"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    code = "import sideman.dsp, os; print(os.environ['NUMBA_CACHE_DIR'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == str(tmp_path / "explicit")
