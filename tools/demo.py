"""`make demo`: the whole resdet pipeline on its built-in, offline default
(configs/pipeline/demo.yaml), or on your data with --data."""
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from pipeline import main  # noqa: E402

if __name__ == "__main__":
    main(["--config", "configs/pipeline/demo.yaml"] + sys.argv[1:])
