r"""Runs an experiment end to end: training, analyses and report.

With no flags it runs quick.cfg (the transfer experiment of Maennel et al., NeurIPS
2020, at small scale on the offline `embedded` data set):

  python pipelines/run.py
  python pipelines/run.py --flagfile=cifar.cfg
  python pipelines/run.py --flagfile=gaussian.cfg
  python pipelines/run.py --flagfile=cifar.cfg --stages=analyze,report

Rerunning a command continues where it stopped and skips finished work; --force redoes
the selected stages. Outputs: <workdir>/results/<name>.json, report.html, flags.json.
"""
import sys

from tfrandlabels.pipeline import run_main

if __name__ == "__main__":
  run_main.run(sys.argv)
