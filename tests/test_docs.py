"""The README documents what the tools actually accept."""

import re

from conftest import REPO


def test_readme_mentions_only_existing_configs_and_tools():
    text = (REPO / "README.md").read_text()
    for path in set(re.findall(r"\b((?:configs|tools|docs)/[\w/.\-]+\.(?:yaml|py|md))", text)):
        assert (REPO / path).is_file(), path
    for flag in (
        "--resume",
        "--eval-only",
        "--num-gpus",
        "--num-machines",
        "--machine-rank",
        "--dist-url",
    ):
        assert flag in (REPO / "tools" / "pretrain_imagenet.py").read_text(), flag
