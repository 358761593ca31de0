"""The README's Python examples run as written (users copy them first)."""
import re

import pytest
import torch

import mechanisms


def _python_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


def test_readme_has_python_examples(repo_root):
    blocks = _python_blocks((repo_root / "README.md").read_text())
    assert len(blocks) >= 2, "the README should show how to use and how to add a mechanism"


def test_readme_python_examples_run(repo_root):
    blocks = _python_blocks((repo_root / "README.md").read_text())
    before = set(mechanisms.available())
    try:
        for i, block in enumerate(blocks):
            namespace: dict = {}
            try:
                exec(compile(block, f"README.md python block {i}", "exec"), namespace)
            except Exception as exc:  # pragma: no cover - the message is the point
                pytest.fail(f"README python block {i} failed: {type(exc).__name__}: {exc}\n{block}")
        added = set(mechanisms.available()) - before
        # A mechanism defined in the README must be usable like the built-in ones.
        for name in added:
            m = mechanisms.build(name, 16, 2).double()
            x = torch.randn(1, 5, 6, 16, dtype=torch.float64)
            from mechanisms.reference import reference_forward

            assert torch.allclose(m(x), reference_forward(m, x), atol=1e-10)
            assert m.flops(5, 6)["total"] > 0
    finally:
        for name in set(mechanisms.available()) - before:
            mechanisms.unregister(name)
