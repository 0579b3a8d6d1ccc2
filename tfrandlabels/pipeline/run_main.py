"""`pipelines/run.py`: runs one registered experiment's stages into a workdir."""
import os

from absl import flags

from tfrandlabels import analyses
from tfrandlabels import experiments
from tfrandlabels.pipeline import cli
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_FLAGFILE = os.path.join(REPO, "quick.cfg")


def settings(experiment):
  """The flags `experiment` and the analyses read, plus the pipeline's own."""
  analysis_flags = tuple(f for name in analyses.available() for f in analyses.get(name).flags)
  return flag_lib.settings(flag_lib.RUN_FLAGS + tuple(experiment.flags) + analysis_flags,
                           lists_of_ints=experiment.int_lists)


def main():
  experiment = experiments.get(flags.FLAGS.experiment)
  report = runner.run(experiment, settings(experiment))
  if report:
    print(f"report: {report}")


def run(argv):
  cli.start(main, cli.with_default_flagfile(argv, DEFAULT_FLAGFILE))
