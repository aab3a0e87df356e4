"""The committed matmul_subgroup.wgsl is what tools/unroll_matmul.py writes."""

import os
import subprocess
import sys

from conftest import REPO, TOOLS


def test_committed_shader_is_generated(tmp_path):
    out = tmp_path / "matmul_subgroup.wgsl"
    subprocess.run([sys.executable, os.path.join(TOOLS, "unroll_matmul.py"), "--out", str(out)], check=True)
    with open(os.path.join(REPO, "shaders", "matmul_subgroup.wgsl")) as f:
        assert out.read_text() == f.read(), "re-run tools/unroll_matmul.py"
