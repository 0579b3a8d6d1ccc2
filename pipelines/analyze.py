r"""Runs registered analyses on a saved Keras model, or on a model a pipeline trained.

  python pipelines/analyze.py --model_path=model.keras --dataset=cifar10 --split=test \
      --analyses=alignment,attribution --workdir=workdir/my_model
  python pipelines/analyze.py --model_path=workdir/quick --checkpoint=scratch

Writes <workdir>/results/<analysis>.json and <workdir>/report.html.
"""
import sys

from tfrandlabels.pipeline import analyze_main

if __name__ == "__main__":
  analyze_main.run(sys.argv)
