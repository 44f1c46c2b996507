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
)
