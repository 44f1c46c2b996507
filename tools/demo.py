"""`make demo`: the whole resdet pipeline on its built-in, offline default
(configs/pipeline/demo.yaml), or on your data with --data [--images]."""
from resdet.pipeline import main

if __name__ == "__main__":
    main(default_config="configs/pipeline/demo.yaml")
