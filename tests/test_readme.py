"""The README's promises: its plug-in snippet works; resdet without Detectron2 says how to
install it; CI runs exactly the README's test command."""
import re
import subprocess
import sys

from conftest import REPO


def test_readme_plugin_example_builds_a_resdet_fpn_model():
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- plugin-example[^>]*-->\s*```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    model = scope["model"]
    from resdet.modeling.resnet import BottleneckBlock

    assert type(model.backbone).__name__ == "FPN"
    assert isinstance(model.backbone.bottom_up.res3[0], BottleneckBlock)


def test_import_without_detectron2_explains_how_to_install():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'detectron2' or name.startswith('detectron2.'):\n"
        "            raise ImportError('No module named detectron2')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import resdet\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0
    assert "ImportError: resdet needs Detectron2" in r.stderr
    assert "pip install" in r.stderr and "README.md" in r.stderr


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", ci, re.M)
