from setuptools import find_packages, setup

setup(
    name="resdet",
    version="0.1.0",
    description="Residual networks (He et al. 2015) for Detectron2: backbones, pretraining, "
    "weight conversion, detection fine-tuning and evaluation",
    packages=find_packages(include=["resdet", "resdet.*"]),
    # The configs ship inside the package, as Detectron2's model_zoo/configs: resdet/configs
    # is a link to the top-level configs/, so a checkout reads configs/ itself and a built
    # wheel holds copies (resdet.model_zoo finds them in both).
    package_data={"resdet": ["configs/*.yaml", "configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.9",
    # Detectron2 is deliberately absent: it has no PyPI package; see README.md, "Install".
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "numpy",
        "fvcore",
        "iopath",
        "pycocotools",
        "faster-coco-eval",
        "opencv-python-headless",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "pillow",
        "timm",  # its accuracy() scores pretraining evaluation
    ],
    # `resdet COMMAND ...` (train, eval, predict, evaluate, export, pretrain, convert, ...),
    # the same as `python -m resdet COMMAND` and, in a checkout, `python tools/<file>.py`
    entry_points={"console_scripts": ["resdet = resdet.tools:main"]},
    # resdet.export's runtimes: pip install -e '.[deploy]' from a checkout; the lower bounds
    # are the versions tested (requirements.txt pins them); ml_dtypes gives onnx its bf16 types
    extras_require={"deploy": ["onnx>=1.23.2", "onnxscript>=0.7.2", "onnxruntime>=1.31.1",
                               "openvino>=2026.4.1", "ml_dtypes>=0.7.0"]},
)
