"""Plain vs residual CIFAR nets trained at equal iterations within a time budget (paper
Figs. 1 and 6), with their layer responses (Fig. 7); see resdet/analysis/degradation.py.

    python tools/degradation_study.py --depths 20 56 --budget-minutes 20 \
        --data ../shared/data/cifar10-mini --output output/degradation_study
"""
import sys

from resdet.analysis.degradation import main

if __name__ == "__main__":
    sys.exit(main())
